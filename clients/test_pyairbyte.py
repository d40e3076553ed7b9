"""PyAirbyte reads Postgate twice into its default cache (DuckDB); the second read gets the changes.

PyAirbyte runs the binary as a local executable (`ab.get_source(..., local_executable=...)`),
offline and untracked (conftest.py sets AIRBYTE_OFFLINE_MODE=1, DO_NOT_TRACK=1 and a private
AIRBYTE_PROJECT_DIR before PyAirbyte is imported). It configures every stream as incremental and
keeps the STATE messages in the cache, handing them back on the next read.

- cursor: a table with an `updated_at` column under the Standard method; between the reads one
  row is updated (its `updated_at` moves forward) and one inserted: the second read returns
  exactly those two.
- CDC: a table in a publication, read through a slot; between the reads one row is inserted, one
  updated and one deleted: the second read returns exactly those three changes, the delete with
  `_ab_cdc_deleted_at`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import airbyte as ab
from lab import Lab, drop_cdc_objects, grant_schema, quote_ident, unique_name
from postgate_adapter import mask, postgate_binary


@pytest.fixture(scope="module")
def default_cache() -> Any:
    cache = ab.get_default_cache()
    assert cache.db_path.name == "default_cache.duckdb"
    return cache


def _rows(cache: Any, table: str, columns: str) -> list[tuple[Any, ...]]:
    """The cache's table, as PyAirbyte's public dataset API returns it, ordered by id."""
    frame = cache[table].to_pandas()
    names = [c.strip() for c in columns.split(",")]
    missing = [n for n in names if n not in frame.columns]
    assert not missing, f"cache table {table} lacks columns {missing}: {list(frame.columns)}"
    frame = frame.sort_values("id")
    return [
        tuple(None if _is_null(v) else (int(v) if n == "id" else v) for n, v in zip(names, row))
        for row in frame[names].itertuples(index=False, name=None)
    ]


def _is_null(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _stored_states(cache: Any, source_name: str) -> list[Any]:
    """The state messages PyAirbyte kept in the cache for `source_name` (what it hands back next)."""
    provider = cache.get_state_provider(source_name=source_name, refresh=True)
    return list(provider.state_message_artifacts or [])


def _read(source: Any, cache: Any, lab: Lab) -> Any:
    try:
        return source.read(cache=cache)
    except Exception as error:  # noqa: BLE001  # re-raised with secrets masked
        raise AssertionError(mask(f"PyAirbyte read failed: {error!r}", lab.secrets())) from None


@pytest.fixture
def cursor_table(lab: Lab) -> Iterator[tuple[str, str]]:
    schema = unique_name("pyab_cursor")
    s = quote_ident(schema)
    with lab.connect() as conn:
        conn.execute(f"CREATE SCHEMA {s}")
        conn.execute(
            f"CREATE TABLE {s}.orders (id integer PRIMARY KEY, amount numeric(12,2), "
            "note text, updated_at timestamptz NOT NULL)"
        )
        conn.execute(
            f"INSERT INTO {s}.orders VALUES "
            "(1, 10.00, 'one', '2024-01-01T00:00:01Z'), "
            "(2, 20.00, 'two', '2024-01-01T00:00:02Z'), "
            "(3, 30.00, 'three', '2024-01-01T00:00:03Z')"
        )
        grant_schema(conn, lab, schema)
    try:
        yield schema, "orders"
    finally:
        with lab.connect() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")


def test_pyairbyte_cursor_incremental_twice(lab: Lab, default_cache: Any, cursor_table: tuple[str, str]) -> None:
    schema, table = cursor_table
    source = ab.get_source(
        "source-postgate",
        config=lab.config(user="reader", schemas=[schema]),
        local_executable=str(postgate_binary()),
        streams=[table],
    )
    # PyAirbyte's own catalog: every stream incremental, the discovered default cursor.
    configured = source.get_configured_catalog()
    assert [s.sync_mode.value for s in configured.streams] == ["incremental"]
    assert configured.streams[0].cursor_field == ["updated_at"], (
        "discover should offer updated_at as the default cursor: "
        f"{configured.streams[0].stream.default_cursor_field}"
    )

    first = _read(source, default_cache, lab)
    assert first.processed_records == 3
    assert _rows(default_cache, table, "id, note") == [(1, "one"), (2, "two"), (3, "three")]
    stored = _stored_states(default_cache, "source-postgate")
    assert [m.type.value for m in stored] == ["STREAM"], f"PyAirbyte kept {stored}"

    s = quote_ident(schema)
    with lab.connect() as conn:
        conn.execute(f"UPDATE {s}.orders SET note = 'two, changed', updated_at = '2024-06-01T00:00:00Z' WHERE id = 2")
        conn.execute(f"INSERT INTO {s}.orders VALUES (4, 40.00, 'four', '2024-06-01T00:00:01Z')")

    second = _read(source, default_cache, lab)
    assert second.processed_records == 2, (
        f"the second read should return only the updated and the inserted row, got {second.processed_records}"
    )
    # Merged by primary key into the cache: the updated row replaced, the new one added.
    assert _rows(default_cache, table, "id, note") == [
        (1, "one"),
        (2, "two, changed"),
        (3, "three"),
        (4, "four"),
    ]


@pytest.fixture
def cdc_table(lab: Lab) -> Iterator[dict[str, str]]:
    schema = unique_name("pyab_cdc")
    slot = unique_name("pyab_slot")
    publication = unique_name("pyab_pub")
    s = quote_ident(schema)
    with lab.connect() as conn:
        conn.execute(f"CREATE SCHEMA {s}")
        conn.execute(f"CREATE TABLE {s}.cdc_orders (id integer PRIMARY KEY, note text, payload jsonb)")
        conn.execute(
            f"INSERT INTO {s}.cdc_orders VALUES (1, 'one', '{{\"a\":1}}'), (2, 'two', NULL), (3, 'three', '[]')"
        )
        grant_schema(conn, lab, schema)
        conn.execute(f"CREATE PUBLICATION {quote_ident(publication)} FOR TABLES IN SCHEMA {s}")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        yield {"schema": schema, "slot": slot, "publication": publication, "table": "cdc_orders"}
    finally:
        with lab.connect() as conn:
            drop_cdc_objects(conn, slot=slot, publication=publication)
            conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")


def test_pyairbyte_cdc_twice(lab: Lab, default_cache: Any, cdc_table: dict[str, str]) -> None:
    table = cdc_table["table"]
    source = ab.get_source(
        "source-postgate-cdc",
        config=lab.config(
            user="repl",
            schemas=[cdc_table["schema"]],
            cdc={
                "replication_slot": cdc_table["slot"],
                "publication": cdc_table["publication"],
                "initial_waiting_seconds": 5,
            },
        ),
        local_executable=str(postgate_binary()),
        streams=[table],
    )
    configured = source.get_configured_catalog()
    assert [s.sync_mode.value for s in configured.streams] == ["incremental"]

    first = _read(source, default_cache, lab)
    assert first.processed_records == 3
    assert _rows(default_cache, table, "id, note") == [(1, "one"), (2, "two"), (3, "three")]
    # Postgate checkpoints CDC with GLOBAL states (test_protocol_extras checks them raw). Without
    # a stored state PyAirbyte passes `--state []` next time and the read starts over.
    stored = _stored_states(default_cache, "source-postgate-cdc")
    if not stored:
        # Known limitation of the client, not of Postgate: the raw resume is checked in
        # test_protocol_extras. Once a PyAirbyte release stores GLOBAL states, the rest runs.
        pytest.xfail(
            "PyAirbyte 0.71.3 keeps no GLOBAL state (its SqlProcessor queues GLOBAL states under "
            "the key '_AirbyteStateType.GLOBAL', which no stream's finalize step ever flushes), "
            "so its second CDC read starts over"
        )

    s = quote_ident(cdc_table["schema"])
    with lab.connect() as conn:
        conn.execute(f"INSERT INTO {s}.cdc_orders VALUES (4, 'four', '{{}}')")
        conn.execute(f"UPDATE {s}.cdc_orders SET note = 'two, changed' WHERE id = 2")
        conn.execute(f"DELETE FROM {s}.cdc_orders WHERE id = 3")

    second = _read(source, default_cache, lab)
    assert second.processed_records == 3, (
        f"the second read should return the insert, the update and the delete, got {second.processed_records}"
    )
    rows = _rows(default_cache, table, "id, note, _ab_cdc_deleted_at")
    by_id = {row[0]: row for row in rows}
    assert sorted(by_id) == [1, 2, 3, 4]
    assert by_id[1][1:] == ("one", None)
    assert by_id[2][1] == "two, changed" and by_id[2][2] is None
    assert by_id[3][2] is not None, "the deleted row carries _ab_cdc_deleted_at"
    assert by_id[4][1:] == ("four", None)
