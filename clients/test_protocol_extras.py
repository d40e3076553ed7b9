"""What airbyte-cdk's standard source suite leaves out but Airbyte's acceptance tests require.

These run the binary directly (`run_postgate`), not through `AirbyteEntrypoint`: the entrypoint
recomputes `sourceStats.recordCount` on every STATE (`handle_record_counts`), so only Postgate's
raw output tells whether Postgate itself counts right.

- every configured stream's statuses are STARTED, RUNNING (one or more), COMPLETE, in that order
  (CAT `_validate_stream_statuses`), with the stream's records between STARTED and COMPLETE;
- every stream is covered by at least one STATE (STREAM, or GLOBAL listing it), each carrying
  `sourceStats.recordCount` equal to the records of its stream(s) since that stream's previous
  state, and no record comes after the last state covering its stream;
- every property of `spec` whose name says it holds a secret is `airbyte_secret`, and nothing that
  cannot hold one is (CAT `test_secret_is_properly_marked`);
- each `oneOf` in `spec` sits in an object and has exactly one common property with a `const` in
  every option (CAT `test_oneof_usage`); that discriminator is required and its values differ.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

import pytest

from conformance_data import EXPECTED_ROWS
from postgate_adapter import RawRun, run_postgate

Descriptor = tuple[str | None, str]


# --- helpers -------------------------------------------------------------------------------------


def _ok(run: RawRun, secrets: list[str]) -> RawRun:
    assert run.returncode == 0 and not run.errors(), run.describe(secrets)
    assert not run.non_json_lines, (
        "stdout must hold only Airbyte messages; got non-JSON lines:\n" + run.describe(secrets)
    )
    return run


def _discover(config: dict[str, Any], secrets: list[str]) -> list[dict[str, Any]]:
    run = _ok(run_postgate("discover", config=config), secrets)
    catalogs = run.of_type("CATALOG")
    assert len(catalogs) == 1, f"expected one CATALOG, got {len(catalogs)}"
    return catalogs[0]["catalog"]["streams"]


def _configured(stream: dict[str, Any], mode: str) -> dict[str, Any]:
    configured: dict[str, Any] = {
        "stream": stream,
        "sync_mode": mode,
        "destination_sync_mode": "append_dedup" if stream.get("source_defined_primary_key") else "append",
    }
    if stream.get("source_defined_primary_key"):
        configured["primary_key"] = stream["source_defined_primary_key"]
    if mode == "incremental":
        if stream.get("source_defined_cursor"):
            configured["cursor_field"] = stream.get("default_cursor_field") or []
        else:
            configured["cursor_field"] = stream.get("default_cursor_field") or ["updated_at"]
    return configured


def _catalog_for(streams: list[dict[str, Any]], plan: str) -> dict[str, Any]:
    configured = []
    for stream in streams:
        modes = stream.get("supported_sync_modes") or []
        props = (stream.get("json_schema") or {}).get("properties") or {}
        if plan == "full_refresh":
            mode = "full_refresh"
        elif plan == "cursor":
            # Incremental on a cursor column where a table has one; full refresh elsewhere.
            usable = stream.get("default_cursor_field") or (["updated_at"] if "updated_at" in props else None)
            mode = "incremental" if "incremental" in modes and usable else "full_refresh"
        else:  # cdc: incremental wherever offered (tables in the publication)
            mode = "incremental" if "incremental" in modes else "full_refresh"
        configured.append(_configured(stream, mode))
    return {"streams": configured}


def _descriptor(d: dict[str, Any]) -> Descriptor:
    return (d.get("namespace"), d["name"])


def _check_statuses_and_states(run: RawRun, catalog: dict[str, Any]) -> list[str]:
    """Return every violation found (empty when the run conforms)."""
    problems: list[str] = []
    configured = [_descriptor(c["stream"]) for c in catalog["streams"]]
    statuses: dict[Descriptor, list[str]] = defaultdict(list)
    first_status_at: dict[Descriptor, int] = {}
    complete_at: dict[Descriptor, int] = {}
    record_positions: dict[Descriptor, list[int]] = defaultdict(list)
    since_state: Counter[Descriptor] = Counter()
    covered: set[Descriptor] = set()
    bad_states: list[str] = []

    for index, message in enumerate(run.messages):
        kind = message["type"]
        if kind == "RECORD":
            d = (message["record"].get("namespace"), message["record"]["stream"])
            record_positions[d].append(index)
            since_state[d] += 1
        elif kind == "TRACE" and message["trace"].get("type") == "STREAM_STATUS":
            status = message["trace"]["stream_status"]
            d = _descriptor(status["stream_descriptor"])
            statuses[d].append(status["status"])
            first_status_at.setdefault(d, index)
            if status["status"] == "COMPLETE":
                complete_at[d] = index
        elif kind == "STATE":
            state = message["state"]
            stype = state.get("type", "LEGACY")
            if stype == "STREAM":
                streams = [_descriptor(state["stream"]["stream_descriptor"])]
            elif stype == "GLOBAL":
                streams = [
                    _descriptor(s["stream_descriptor"])
                    for s in (state.get("global") or {}).get("stream_states") or []
                ]
            else:
                bad_states.append(f"state #{index} has type {stype}; STREAM or GLOBAL expected")
                continue
            covered.update(streams)
            expected = sum(since_state[d] for d in streams)
            stats = state.get("sourceStats")
            count = stats.get("recordCount") if isinstance(stats, dict) else None
            if count is None:
                bad_states.append(f"{stype} state at message #{index} for {streams} has no sourceStats.recordCount")
            elif count != expected:
                bad_states.append(
                    f"{stype} state at message #{index} for {streams}: sourceStats.recordCount={count}, "
                    f"but {expected} records of its stream(s) came since their previous state"
                )
            for d in streams:
                since_state[d] = 0

    for d in configured:
        got = statuses.get(d, [])
        if len(got) < 3 or got[0] != "STARTED" or got[-1] != "COMPLETE" or any(
            s != "RUNNING" for s in got[1:-1]
        ):
            problems.append(f"stream {d}: statuses {got}; expected STARTED, RUNNING..., COMPLETE")
        positions = record_positions.get(d, [])
        if positions and d in first_status_at and positions[0] < first_status_at[d]:
            problems.append(f"stream {d}: a record came before its STARTED status")
        if positions and d in complete_at and positions[-1] > complete_at[d]:
            problems.append(f"stream {d}: a record came after its COMPLETE status")
        if d not in covered:
            problems.append(f"stream {d}: no STATE message (STREAM, or GLOBAL listing it) was emitted")
        if since_state[d]:
            problems.append(f"stream {d}: {since_state[d]} record(s) came after its last STATE")
    unknown = set(statuses) - set(configured)
    if unknown:
        problems.append(f"statuses for streams not in the catalog: {sorted(unknown, key=str)}")
    return problems + bad_states


def _counts(run: RawRun) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for message in run.of_type("RECORD"):
        counts[message["record"]["stream"]] += 1
    return dict(counts)


# --- read: statuses and state counts ------------------------------------------------------------


@pytest.mark.parametrize("plan", ["full_refresh", "cursor", "cdc"])
def test_read_stream_statuses_and_state_record_counts(conformance: Any, plan: str) -> None:
    config = conformance.cdc_config if plan == "cdc" else conformance.config
    secrets = conformance.secrets()
    streams = _discover(config, secrets)
    names = {s["name"] for s in streams}
    assert set(EXPECTED_ROWS) <= names, f"discover misses streams: {set(EXPECTED_ROWS) - names}"
    streams = [s for s in streams if s["name"] in EXPECTED_ROWS]
    catalog = _catalog_for(streams, plan)
    if plan != "full_refresh":
        assert any(c["sync_mode"] == "incremental" for c in catalog["streams"]), (
            f"no stream offers incremental under the {plan} config"
        )
    run = _ok(run_postgate("read", config=config, catalog=catalog), secrets)

    # The data is what the tables hold (a first read: every row, for every mode).
    assert _counts(run) == {k: v for k, v in EXPECTED_ROWS.items() if v}, "records per stream"
    problems = _check_statuses_and_states(run, catalog)
    assert not problems, f"`postgate read` ({plan}) breaks Airbyte's rules:\n- " + "\n- ".join(problems)


def test_state_record_counts_after_a_second_cdc_read(conformance: Any, lab: Any) -> None:
    """A CDC read that resumes from a state counts the changes it emits, per state."""
    from lab import quote_ident

    secrets = conformance.secrets()
    config = conformance.cdc_config
    streams = [s for s in _discover(config, secrets) if s["name"] in ("items", "no_key_log")]
    catalog = _catalog_for(streams, "cdc")
    first = _ok(run_postgate("read", config=config, catalog=catalog), secrets)
    states = first.of_type("STATE")
    assert states, "the first CDC read emitted no STATE"
    last_global = [s for s in states if s["state"].get("type") == "GLOBAL"]
    state_arg = [last_global[-1]["state"]] if last_global else [s["state"] for s in states]
    s = quote_ident(conformance.schema)
    with lab.connect() as conn:
        conn.execute(f"INSERT INTO {s}.items VALUES (100, 'cdc insert')")
        conn.execute(f"UPDATE {s}.items SET label = 'cdc update' WHERE id = 1")
        conn.execute(f"INSERT INTO {s}.no_key_log VALUES ('cdc', now())")
    try:
        second = _ok(run_postgate("read", config=config, catalog=catalog, state=state_arg), secrets)
        assert _counts(second) == {"items": 2, "no_key_log": 1}, "the second read returns the changes only"
        problems = _check_statuses_and_states(second, catalog)
        assert not problems, "second CDC read breaks Airbyte's rules:\n- " + "\n- ".join(problems)
    finally:
        # Leave the tables as the other tests expect them.
        with lab.connect() as conn:
            conn.execute(f"DELETE FROM {s}.items WHERE id = 100")
            conn.execute(f"UPDATE {s}.items SET label = 'lower one' WHERE id = 1")
            conn.execute(f"DELETE FROM {s}.no_key_log WHERE msg = 'cdc'")


# --- records against their schemas, as Postgate wrote them ---------------------------------------

_TIME = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,9})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?$|^24:00:00(?:\.0+)?(?:Z|[+-]\d\d:\d\d)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _record_validator(schema: dict[str, Any]) -> Any:
    """Draft 7 with strict integers, as the suite; formats as Airbyte documents them.

    The suite's own checker takes JSON Schema draft 3's `time` (`%H:%M:%S` exactly), which rejects
    every fractional or zoned time (Airbyte's documented `03:04:05.123456`, `03:04:05+08:00`); its
    in-process path also drops null-valued fields. This check reads Postgate's raw stdout instead,
    so what fails here is Postgate's alone. Top-level nulls pass (Airbyte: "by default, all fields
    are treated as nullable"); a null inside an array must be allowed by the array's `items`.
    """
    from jsonschema import FormatChecker

    from airbyte_cdk.test.standard_tests._read_assertions import (
        StrictIntegerDraft7Validator,
        _is_valid_datetime,
    )

    checker = FormatChecker(formats=())
    checker.checks("date-time")(lambda v: not isinstance(v, str) or _is_valid_datetime(v))
    checker.checks("time")(lambda v: not isinstance(v, str) or bool(_TIME.match(v)))
    checker.checks("date")(lambda v: not isinstance(v, str) or bool(_DATE.match(v)))
    return StrictIntegerDraft7Validator(schema, format_checker=checker)


@pytest.mark.parametrize("plan", ["full_refresh", "cdc"])
def test_raw_records_match_their_stream_schemas(conformance: Any, plan: str) -> None:
    config = conformance.cdc_config if plan == "cdc" else conformance.config
    secrets = conformance.secrets()
    streams = [s for s in _discover(config, secrets) if s["name"] in EXPECTED_ROWS]
    catalog = _catalog_for(streams, plan)
    run = _ok(run_postgate("read", config=config, catalog=catalog), secrets)
    validators = {s["name"]: _record_validator(s["json_schema"]) for s in streams}
    problems: dict[str, set[str]] = defaultdict(set)
    for message in run.of_type("RECORD"):
        record = message["record"]
        for error in validators[record["stream"]].iter_errors(record["data"]):
            if error.instance is None and len(error.absolute_path) == 1:
                continue  # "by default, all fields are treated as nullable" (Airbyte's type system)
            where = "/".join(str(p) for p in error.absolute_path)
            got = type(error.instance).__name__ if error.instance is not None else "null"
            problems[record["stream"]].add(f"{where}: fails {error.validator} {error.validator_value!r}, got {got}")
    assert not problems, "records that do not match their discovered schema:\n" + "\n".join(
        f"- {stream}: {sorted(found)}" for stream, found in sorted(problems.items())
    )


# --- spec ---------------------------------------------------------------------------------------

# CAT's secret_property_names (exact names), plus tokens that always mean a secret in a name.
_CAT_SECRET_NAMES = {
    "client_token", "access_token", "api_token", "token", "secret", "client_secret", "password",
    "key", "service_account_info", "service_account", "tenant_id", "certificate", "jwt",
    "credentials", "app_id", "appid", "refresh_token",
}
_SECRET_TOKENS = {"password", "passphrase", "secret", "token", "credentials", "jwt", "passwd", "pwd"}
# A private key (`ssh_key`, `client_key`, `entra_client_key`) is a secret; a host key pin is public.
_PUBLIC_KEY_NAMES = {"tunnel_host_key"}


def _names_a_secret(name: str) -> bool:
    lowered = name.lower()
    tokens = set(re.split(r"[^a-z0-9]+", lowered))
    if lowered in _CAT_SECRET_NAMES or tokens & _SECRET_TOKENS:
        return True
    return lowered.endswith("_key") and lowered not in _PUBLIC_KEY_NAMES


def _can_store_secret(prop: dict[str, Any]) -> bool:
    types = prop.get("type")
    types = [types] if isinstance(types, str) else (types or [])
    return bool({"string", "integer", "number"} & set(types)) and "const" not in prop


def _spec() -> dict[str, Any]:
    run = run_postgate("spec")
    assert run.returncode == 0 and not run.non_json_lines, run.describe()
    specs = run.of_type("SPEC")
    assert len(specs) == 1, f"expected one SPEC message, got {len(specs)}"
    return specs[0]["spec"]


def _walk_properties(node: Any, path: str = ""):  # type: ignore[no-untyped-def]
    """Yield (path, name, definition) for every property under `properties`, at any depth."""
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            if isinstance(prop, dict):
                yield f"{path}/properties/{name}", name, prop
                yield from _walk_properties(prop, f"{path}/properties/{name}")
        for keyword in ("oneOf", "anyOf", "allOf"):
            for i, option in enumerate(node.get(keyword) or []):
                yield from _walk_properties(option, f"{path}/{keyword}/{i}")
        if isinstance(node.get("items"), dict):
            yield from _walk_properties(node["items"], f"{path}/items")


def test_spec_marks_every_secret_airbyte_secret() -> None:
    spec = _spec()["connectionSpecification"]
    exposed, hidden = [], []
    walked = list(_walk_properties(spec))
    assert len(walked) > 20, "the spec walk found too few properties to be meaningful"
    for path, name, prop in walked:
        marked = bool(prop.get("airbyte_secret"))
        if _names_a_secret(name) and _can_store_secret(prop) and not marked:
            exposed.append(path)
        if marked and not _can_store_secret(prop):
            hidden.append(path)
    assert not exposed, f"secret-holding properties not marked airbyte_secret: {exposed}"
    assert not hidden, f"airbyte_secret on properties that cannot hold a secret: {hidden}"
    # The secrets the README documents are among those checked (the walk reaches into oneOf).
    marked = {name for _, name, prop in walked if prop.get("airbyte_secret")}
    assert {"password", "client_key", "ssh_key", "tunnel_user_password", "entra_client_key"} <= marked


def test_spec_oneofs_have_one_const_discriminator() -> None:
    spec = _spec()["connectionSpecification"]
    problems: list[str] = []
    found = 0

    def visit(node: Any, path: str) -> None:
        nonlocal found
        if isinstance(node, dict):
            for keyword in ("oneOf", "anyOf"):
                if keyword in node:
                    found += 1
                    problems.extend(_oneof_problems(node, keyword, path))
            for key, value in node.items():
                visit(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{path}/{i}")

    visit(spec, "")
    assert found >= 3, f"expected the ssl_mode, replication_method and tunnel_method oneOfs, found {found}"
    assert not problems, "oneOf problems:\n- " + "\n- ".join(problems)


def _oneof_problems(node: dict[str, Any], keyword: str, path: str) -> list[str]:
    where = f"{path}/{keyword}"
    if node.get("type") != "object":
        return [f"{where}: the object holding it has type {node.get('type')!r}, not 'object'"]
    options = node[keyword]
    if not all(isinstance(o, dict) and "properties" in o for o in options):
        return [f"{where}: every option must be an object with properties"]
    common = set.intersection(*(set(o["properties"]) for o in options))
    consts = sorted(p for p in common if all("const" in o["properties"][p] for o in options))
    if len(consts) != 1:
        return [f"{where}: {len(consts)} common const properties ({consts}); exactly one expected"]
    key = consts[0]
    problems = []
    values = [o["properties"][key]["const"] for o in options]
    if len(set(map(str, values))) != len(values):
        problems.append(f"{where}: discriminator {key!r} repeats a value: {values}")
    not_required = [i for i, o in enumerate(options) if key not in (o.get("required") or [])]
    if not_required:
        problems.append(f"{where}: discriminator {key!r} not required in options {not_required}")
    return problems
