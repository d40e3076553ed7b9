"""Facts of the Postgate test lab and helpers to set up data in it.

The lab (`scripts/lab up`) writes its facts as shell `KEY='value'` lines to
/var/lib/postgate-lab/lab.env (POSTGATE_LAB_ENV overrides the path). Every client test needs the
lab: when it is missing, `require_lab()` fails the test with a clear message (never a skip).
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

LAB_ENV = Path(os.environ.get("POSTGATE_LAB_ENV", "/var/lib/postgate-lab/lab.env"))


@dataclass(frozen=True)
class Lab:
    host: str
    port: int
    database: str
    admin_user: str
    admin_password: str
    reader_user: str
    reader_password: str
    repl_user: str
    repl_password: str
    ca_cert_path: Path
    other_ca_cert_path: Path | None

    @property
    def ca_pem(self) -> str:
        return self.ca_cert_path.read_text()

    def secrets(self) -> list[str]:
        """Values that must never appear in printed output."""
        return [self.admin_password, self.reader_password, self.repl_password]

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection:
        """A superuser connection, verified TLS as the brief asks."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=self.admin_user,
            password=self.admin_password,
            sslmode="verify-full",
            sslrootcert=str(self.ca_cert_path),
            connect_timeout=10,
            autocommit=autocommit,
        )

    def config(
        self,
        *,
        user: str = "reader",
        schemas: list[str],
        cdc: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """A Postgate config for the lab (`user` is `reader` or `repl`)."""
        username, password = {
            "reader": (self.reader_user, self.reader_password),
            "repl": (self.repl_user, self.repl_password),
        }[user]
        config: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "username": username,
            "password": password,
            "schemas": schemas,
            "ssl_mode": {"mode": "verify-full", "ca_certificate": self.ca_pem},
        }
        if cdc is not None:
            config["replication_method"] = {"method": "CDC", **cdc}
        config.update(overrides)
        return config


def _parse_env(path: Path) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        parts = shlex.split(raw) if raw else [""]
        facts[key.strip()] = parts[0] if parts else ""
    return facts


def load_lab() -> Lab:
    """Read lab.env; raise RuntimeError when the lab is not up."""
    if not LAB_ENV.is_file():
        raise RuntimeError(
            f"The Postgate lab is not up: {LAB_ENV} is missing. Start it with `scripts/lab up` "
            "(as root) and run the client tests again."
        )
    facts = _parse_env(LAB_ENV)
    missing = [
        key
        for key in (
            "PG_HOST",
            "PG_PORT",
            "PG_DATABASE",
            "PG_ADMIN_USER",
            "PG_ADMIN_PASSWORD",
            "PG_READER_USER",
            "PG_READER_PASSWORD",
            "PG_REPL_USER",
            "PG_REPL_PASSWORD",
            "CA_CERT",
        )
        if not facts.get(key)
    ]
    if missing:
        raise RuntimeError(f"{LAB_ENV} lacks {', '.join(missing)}")
    other = facts.get("OTHER_CA_CERT")
    return Lab(
        host=facts["PG_HOST"],
        port=int(facts["PG_PORT"]),
        database=facts["PG_DATABASE"],
        admin_user=facts["PG_ADMIN_USER"],
        admin_password=facts["PG_ADMIN_PASSWORD"],
        reader_user=facts["PG_READER_USER"],
        reader_password=facts["PG_READER_PASSWORD"],
        repl_user=facts["PG_REPL_USER"],
        repl_password=facts["PG_REPL_PASSWORD"],
        ca_cert_path=Path(facts["CA_CERT"]),
        other_ca_cert_path=Path(other) if other and Path(other).is_file() else None,
    )


def require_lab() -> Lab:
    """The lab, or a test failure (not a skip) saying it is down or unreachable."""
    try:
        lab = load_lab()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        with lab.connect() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        # psycopg's message names host and port, never the password.
        pytest.fail(f"The Postgate lab's PostgreSQL is unreachable: {error}", pytrace=False)
    return lab


def unique_name(prefix: str) -> str:
    return f"{prefix}_{_secrets.token_hex(4)}"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def grant_schema(conn: psycopg.Connection, lab: Lab, schema: str) -> None:
    q = quote_ident(schema)
    for role in (lab.reader_user, lab.repl_user):
        r = quote_ident(role)
        conn.execute(f"GRANT USAGE ON SCHEMA {q} TO {r}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {q} TO {r}")


def drop_cdc_objects(conn: psycopg.Connection, *, slot: str | None, publication: str | None) -> None:
    if slot:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND NOT active",
            (slot,),
        )
    if publication:
        conn.execute(f"DROP PUBLICATION IF EXISTS {quote_ident(publication)}")


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(data))
    return path
