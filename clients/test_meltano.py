"""Meltano runs Postgate as a Singer tap into target-jsonl and meltanolabs-target-postgres.

Each test writes a project-local meltano.yml whose extractor's `executable` is the built binary
(no pip_url, so Meltano installs nothing and needs no network) and whose loaders are the pinned
targets scripts/client-tests installs in their own venvs. `meltano run` discovers (Postgate's
`--discover`), applies `select:` to the catalog's metadata, runs the tap with `--catalog` and,
from the second run on, `--state` with what Meltano kept of the last STATE message.

- Standard method: a keyed table with `updated_at` (INCREMENTAL by the key discover suggests)
  and a table without a key (FULL_TABLE, ACTIVATE_VERSION). The second run loads only the
  inserted and updated rows; the destination equals the source after each run; a column
  deselected with `select: ['!stream.column']` is left out, the key (inclusion automatic) is not.
- CDC: a table read LOG_BASED through a slot into target-postgres; inserts, updates and deletes
  between the runs reach the destination: deletes arrive with `_sdc_deleted_at`, which the
  target keeps as a soft delete (its `hard_delete` acts on ACTIVATE_VERSION only), and the rows
  not marked deleted equal the source.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lab import Lab, drop_cdc_objects, grant_schema, quote_ident, unique_name
from postgate_adapter import postgate_binary


def _tool(env_name: str) -> str:
    path = os.environ.get(env_name, "")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"{env_name} does not name an executable ({path!r}); run the tests through scripts/client-tests, which installs Meltano and the targets", pytrace=False)
    return path


def _tap(lab: Lab, *, schema: str, user: str, cdc: dict[str, Any] | None = None) -> dict[str, Any]:
    config = lab.config(user=user, schemas=[schema], cdc=cdc)
    # The password comes from the environment (TAP_POSTGATE_PASSWORD), as Meltano users keep it.
    config.pop("password")
    settings = [
        {"name": "host"}, {"name": "port", "kind": "integer"}, {"name": "database"}, {"name": "username"},
        {"name": "password", "kind": "password", "sensitive": True}, {"name": "schemas", "kind": "array"},
        {"name": "ssl_mode", "kind": "object"}, {"name": "replication_method", "kind": "object"},
    ]
    return {
        "name": "tap-postgate",
        "namespace": "tap_postgate",
        "executable": str(postgate_binary()),
        "capabilities": ["catalog", "discover", "state"],
        "settings": settings,
        "config": config,
    }


def _target_postgres(lab: Lab, schema: str, *, hard_delete: bool) -> dict[str, Any]:
    return {
        "name": "target-postgres",
        "namespace": "target_postgres",
        "executable": _tool("TARGET_POSTGRES_BIN"),
        "settings": [
            {"name": "host"}, {"name": "port", "kind": "integer"}, {"name": "user"},
            {"name": "password", "kind": "password", "sensitive": True}, {"name": "database"},
            {"name": "default_target_schema"}, {"name": "ssl_enable", "kind": "boolean"}, {"name": "ssl_mode"},
            {"name": "ssl_certificate_authority"}, {"name": "hard_delete", "kind": "boolean"},
        ],
        "config": {
            "host": lab.host, "port": lab.port, "user": lab.admin_user, "database": lab.database,
            "default_target_schema": schema, "ssl_enable": True, "ssl_mode": "verify-full",
            "ssl_certificate_authority": str(lab.ca_cert_path), "hard_delete": hard_delete,
        },
    }


def _target_jsonl(out: Path) -> dict[str, Any]:
    return {
        "name": "target-jsonl",
        "namespace": "target_jsonl",
        "executable": _tool("TARGET_JSONL_BIN"),
        "settings": [{"name": "destination_path"}, {"name": "do_timestamp_file", "kind": "boolean"}],
        "config": {"destination_path": str(out), "do_timestamp_file": False},
    }


class Project:
    """A Meltano project in a temporary directory (JSON is YAML, so meltano.yml is written as JSON)."""

    def __init__(self, root: Path, lab: Lab, tap: dict[str, Any], loaders: list[dict[str, Any]], password: str) -> None:
        self.root = root
        self.lab = lab
        self.password = password
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (root / "meltano.yml").write_text(json.dumps({
            "default_environment": "test",
            "project_id": "postgate-client-tests",
            "send_anonymous_usage_stats": False,
            "environments": [{"name": "test"}],
            "plugins": {"extractors": [tap], "loaders": loaders},
        }, indent=1))

    def run(self, loader: str) -> str:
        env = {
            **os.environ,
            "TAP_POSTGATE_PASSWORD": self.password,
            "TARGET_POSTGRES_PASSWORD": self.lab.admin_password,
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "MELTANO_DISABLE_TRACKING": "true",
        }
        proc = subprocess.run(
            [_tool("MELTANO_BIN"), "--log-level=info", "run", "tap-postgate", loader],
            cwd=self.root, env=env, capture_output=True, text=True, timeout=300,
        )
        output = proc.stdout + proc.stderr
        for secret in self.lab.secrets():
            assert secret not in output, "a password reached Meltano's output"
        assert proc.returncode == 0, f"meltano run tap-postgate {loader} failed ({proc.returncode}):\n{output[-6000:]}"
        return output


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture()
def standard_schema(lab: Lab) -> Any:
    schema = unique_name("pgmelt")
    q = quote_ident(schema)
    with lab.connect() as conn:
        conn.execute(f"CREATE SCHEMA {q}")
        conn.execute(f"CREATE TABLE {q}.items (id int PRIMARY KEY, name text, note text, updated_at timestamptz NOT NULL)")
        conn.execute(
            f"INSERT INTO {q}.items SELECT g, 'item ' || g, 'note ' || g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' "
            "FROM generate_series(1, 250) g"
        )
        conn.execute(f"CREATE TABLE {q}.tags (label text, weight int)")
        conn.execute(f"INSERT INTO {q}.tags VALUES ('a', 1), ('b', 2), ('c', NULL)")
        grant_schema(conn, lab, schema)
    try:
        yield schema
    finally:
        with lab.connect() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {q} CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema + '_dest')} CASCADE")


def _source(lab: Lab, sql: str) -> list[tuple[Any, ...]]:
    with lab.connect() as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def test_meltano_full_table_and_incremental(lab: Lab, standard_schema: str, tmp_path: Path) -> None:
    s = standard_schema
    q = quote_ident(s)
    dest = s + "_dest"
    out = tmp_path / "jsonl"
    out.mkdir()
    tap = _tap(lab, schema=s, user="reader")
    tap["select"] = [f"{s}-items.*", f"!{s}-items.note", f"{s}-tags.*"]
    project = Project(tmp_path / "project", lab, tap, [_target_jsonl(out), _target_postgres(lab, dest, hard_delete=False)], lab.reader_password)

    project.run("target-jsonl")
    project.run("target-postgres")

    items = _jsonl(out / f"{s}-items.jsonl")
    assert len(items) == 250
    assert all(set(r) == {"id", "name", "updated_at"} for r in items), "the deselected column `note` was read, or a key was dropped"
    assert sorted((r["id"], r["name"]) for r in items) == _source(lab, f"SELECT id, name FROM {q}.items ORDER BY id")
    tags = _jsonl(out / f"{s}-tags.jsonl")
    assert sorted((r["label"], r["weight"]) for r in tags) == [("a", 1), ("b", 2), ("c", None)]

    d = quote_ident(dest)
    assert _source(lab, f"SELECT id, name FROM {d}.items ORDER BY id") == _source(lab, f"SELECT id, name FROM {q}.items ORDER BY id")
    first_loaded = dict(_source(lab, f"SELECT id, _sdc_received_at FROM {d}.items"))

    # Between the runs: two inserts, one update (its updated_at moves forward), one new tag.
    with lab.connect() as conn:
        conn.execute(f"INSERT INTO {q}.items VALUES (251, 'new 251', 'n', timestamptz '2026-02-01 00:00:00+00'), (252, 'new 252', 'n', timestamptz '2026-02-01 00:00:01+00')")
        conn.execute(f"UPDATE {q}.items SET name = 'changed 7', updated_at = timestamptz '2026-02-02 00:00:00+00' WHERE id = 7")
        conn.execute(f"INSERT INTO {q}.tags VALUES ('d', 4)")

    project.run("target-jsonl")
    project.run("target-postgres")

    items = _jsonl(out / f"{s}-items.jsonl")
    second = items[250:]
    assert sorted((r["id"], r["name"]) for r in second) == [(7, "changed 7"), (251, "new 251"), (252, "new 252")], \
        "the second (incremental) run did not load exactly the changed rows"
    # A full table is read whole each run.
    tags = _jsonl(out / f"{s}-tags.jsonl")[3:]
    assert sorted((r["label"], r["weight"]) for r in tags) == [("a", 1), ("b", 2), ("c", None), ("d", 4)]

    assert _source(lab, f"SELECT id, name FROM {d}.items ORDER BY id") == _source(lab, f"SELECT id, name FROM {q}.items ORDER BY id")
    reloaded = [i for i, at in _source(lab, f"SELECT id, _sdc_received_at FROM {d}.items") if first_loaded.get(i) not in (None, at)]
    assert reloaded == [7], f"the second run reloaded unchanged rows: {sorted(reloaded)[:10]}"
    # ACTIVATE_VERSION: rows of the previous full-table version are marked deleted; the live ones equal the source.
    assert sorted(_source(lab, f"SELECT label, weight FROM {d}.tags WHERE _sdc_deleted_at IS NULL"), key=str) == \
        sorted(_source(lab, f"SELECT label, weight FROM {q}.tags"), key=str)


@pytest.fixture()
def cdc_schema(lab: Lab) -> Any:
    schema = unique_name("pgmeltcdc")
    slot = unique_name("pgmelt_slot")
    publication = unique_name("pgmelt_pub")
    q = quote_ident(schema)
    with lab.connect() as conn:
        conn.execute(f"CREATE SCHEMA {q}")
        conn.execute(f"CREATE TABLE {q}.orders (id int PRIMARY KEY, status text, amount numeric(10,2))")
        conn.execute(f"INSERT INTO {q}.orders SELECT g, 'new', g * 1.5 FROM generate_series(1, 100) g")
        grant_schema(conn, lab, schema)
        conn.execute(f"CREATE PUBLICATION {quote_ident(publication)} FOR TABLES IN SCHEMA {q}")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        yield schema, slot, publication
    finally:
        with lab.connect() as conn:
            drop_cdc_objects(conn, slot=slot, publication=publication)
            conn.execute(f"DROP SCHEMA IF EXISTS {q} CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema + '_dest')} CASCADE")


def test_meltano_log_based(lab: Lab, cdc_schema: tuple[str, str, str], tmp_path: Path) -> None:
    s, slot, publication = cdc_schema
    q = quote_ident(s)
    dest = s + "_dest"
    d = quote_ident(dest)
    tap = _tap(lab, schema=s, user="repl", cdc={"replication_slot": slot, "publication": publication, "initial_waiting_seconds": 5})
    tap["select"] = [f"{s}-orders.*"]
    project = Project(tmp_path / "project", lab, tap, [_target_postgres(lab, dest, hard_delete=False)], lab.repl_password)
    source_sql = f"SELECT id, status, amount FROM {q}.orders ORDER BY id"
    dest_sql = f"SELECT id, status, amount FROM {d}.orders WHERE _sdc_deleted_at IS NULL ORDER BY id"

    project.run("target-postgres")
    # The catalog Meltano handed the tap: discover's default for a table under CDC.
    catalog = json.loads((project.root / ".meltano/run/tap-postgate/tap.properties.json").read_text())
    [entry] = [e for e in catalog["streams"] if e["tap_stream_id"] == f"{s}-orders"]
    [top] = [m["metadata"] for m in entry["metadata"] if m["breadcrumb"] == []]
    assert top["replication-method"] == "LOG_BASED" and top["selected"] is True
    assert _source(lab, dest_sql) == _source(lab, source_sql)

    with lab.connect() as conn:
        conn.execute(f"INSERT INTO {q}.orders VALUES (101, 'new', 9.99)")
        conn.execute(f"UPDATE {q}.orders SET status = 'paid' WHERE id IN (3, 4)")
        conn.execute(f"DELETE FROM {q}.orders WHERE id = 5")
    project.run("target-postgres")
    assert _source(lab, dest_sql) == _source(lab, source_sql)
    assert _source(lab, f"SELECT id FROM {d}.orders WHERE _sdc_deleted_at IS NOT NULL") == [(5,)]
    lsns = _source(lab, f"SELECT count(*) FROM {d}.orders WHERE _sdc_lsn IS NOT NULL")
    assert lsns[0][0] == 101, "every LOG_BASED record (snapshot rows too) carries _sdc_lsn"
