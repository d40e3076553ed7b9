"""Shared fixtures of the Postgate client tests (airbyte-cdk standard tests, protocol, PyAirbyte).

Every test needs the lab and the built binary: when either is missing the tests FAIL with a
message saying so. A skip is turned into a failure too, unless it is one of the standard suite's
own "this command does not run for this scenario" skips (see `pytest_runtest_makereport`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# One private (0700) temporary directory for the session, removed at its end: airbyte-cdk's job
# runner writes each scenario's config (passwords included) to tempfile.gettempdir()/airbyte-test
# and never deletes it, and PyAirbyte keeps its cache and logs there too.
SESSION_TMP = Path(tempfile.mkdtemp(prefix="postgate-clients-"))
tempfile.tempdir = str(SESSION_TMP)
# PyAirbyte reads these when it is imported: offline, untracked, its default cache (DuckDB) and
# logs in the session directory rather than in the working directory and /tmp/airbyte.
os.environ.setdefault("AIRBYTE_OFFLINE_MODE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("AIRBYTE_PROJECT_DIR", str(SESSION_TMP / "pyairbyte"))
os.environ.setdefault("AIRBYTE_LOGGING_ROOT", str(SESSION_TMP / "pyairbyte-logs"))

import pytest  # noqa: E402

from conformance_data import build_schema_sql  # noqa: E402
from lab import (  # noqa: E402
    Lab,
    drop_cdc_objects,
    grant_schema,
    quote_ident,
    require_lab,
    unique_name,
    write_json,
)
from postgate_adapter import postgate_binary  # noqa: E402

pytest_plugins = ["airbyte_cdk.test.standard_tests.pytest_hooks"]

CLIENTS_DIR = Path(__file__).resolve().parent
SECRETS_DIR = CLIENTS_DIR / "secrets"

# Skips raised by the standard suite itself for a command a scenario does not run; any other
# skip (no lab, no binary, no docker...) would hide a missing check, so it fails instead.
_ALLOWED_SKIP_MARKERS = (
    "does not run for scenario",
    "do not run for scenario",
    "Skipping discover test for scenario that expects an exception",
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    # An expected failure of a known client limitation (pytest.xfail with a reason) stays one.
    if report.skipped and call.excinfo is not None and not hasattr(report, "wasxfail"):
        reason = str(call.excinfo.value)
        if not any(marker in reason for marker in _ALLOWED_SKIP_MARKERS):
            report.outcome = "failed"
            report.longrepr = f"skipped, which the client tests do not allow: {reason}"


def pytest_sessionstart(session: pytest.Session) -> None:
    binary = postgate_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise pytest.UsageError(
            f"Postgate binary not found or not executable at {binary}; build it "
            "(swift build) or set POSTGATE_BIN"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def lab() -> Lab:
    return require_lab()


@dataclass
class Conformance:
    """The hostile schema of this session, with its CDC objects and configs."""

    lab: Lab
    schema: str
    slot: str
    publication: str
    config: dict[str, Any]
    cdc_config: dict[str, Any]

    def secrets(self) -> list[str]:
        return self.lab.secrets()


@pytest.fixture(scope="session")
def conformance(lab: Lab) -> Any:
    schema = unique_name("pgconf")
    slot = unique_name("pgconf_slot")
    publication = unique_name("pgconf_pub")
    with lab.connect() as conn:
        for statement in build_schema_sql(schema):
            conn.execute(statement)
        grant_schema(conn, lab, schema)
        conn.execute(
            f"CREATE PUBLICATION {quote_ident(publication)} FOR TABLES IN SCHEMA {quote_ident(schema)}"
        )
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    config = lab.config(user="reader", schemas=[schema])
    cdc_config = lab.config(
        user="repl",
        schemas=[schema],
        cdc={"replication_slot": slot, "publication": publication, "initial_waiting_seconds": 5},
    )
    # The scenario configs named in acceptance-test-config.yml (private files, git-ignored).
    SECRETS_DIR.mkdir(mode=0o700, exist_ok=True)
    write_json(SECRETS_DIR / "config.json", config)
    write_json(SECRETS_DIR / "config_cdc.json", cdc_config)
    write_json(SECRETS_DIR / "invalid_password.json", {**config, "password": "not-the-password"})
    write_json(SECRETS_DIR / "missing_database.json", {**config, "database": "no_such_database"})
    other_ca = lab.other_ca_cert_path.read_text() if lab.other_ca_cert_path else None
    if other_ca is None:
        pytest.fail("lab.env has no OTHER_CA_CERT; the untrusted-CA scenario needs it")
    write_json(
        SECRETS_DIR / "untrusted_ca.json",
        {**config, "ssl_mode": {"mode": "verify-full", "ca_certificate": other_ca}},
    )
    try:
        yield Conformance(lab, schema, slot, publication, config, cdc_config)
    finally:
        shutil.rmtree(SECRETS_DIR, ignore_errors=True)
        with lab.connect() as conn:
            drop_cdc_objects(conn, slot=slot, publication=publication)
            conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
