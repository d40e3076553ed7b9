"""Plug the built Postgate executable into airbyte-cdk's standard tests.

airbyte-cdk's `SourceTestSuiteBase` runs every job in-process: `run_test_job` hands the object that
`create_connector()` returns to `entrypoint_wrapper._run_command`, which drives it through
`AirbyteEntrypoint.run()` exactly as `airbyte_cdk.entrypoint.launch` drives a Python source. So the
adapter is a `Source` (which satisfies the suite's `IConnector` protocol: it has `spec`) whose
methods run `postgate <verb>` as a subprocess and turn its stdout back into protocol objects:

- `spec(logger)`           runs `postgate spec` and returns the one SPEC message's specification.
- `read_config(path)`      remembers the path the suite wrote and returns its JSON (the entrypoint
                           validates it against the spec and sets up its secret filter, as always).
- `check` / `discover`     run `postgate check|discover --config <that path>`; the CONNECTION_STATUS
                           (CATALOG) message is returned, every other message (LOG, TRACE, and any
                           extra CONNECTION_STATUS/CATALOG) goes to the `message_repository`, which
                           the entrypoint emits ahead of it.
- `read_catalog/read_state` return the paths unparsed, so Postgate reads the very files the suite
                           wrote (an invalid catalog reaches the executable, not a Python parser).
- `read`                   streams `postgate read --config --catalog [--state]`, yielding each
                           message as it arrives.

Nothing is repaired or hidden: a stdout line that is not a valid Airbyte message, a missing
CONNECTION_STATUS/CATALOG/SPEC, or a non-zero exit status raises `PostgateExecutionError` (after
all messages Postgate did emit have been passed on), which the entrypoint wrapper reports as an
error TRACE, the way the platform treats a failed connector process.

`run_postgate()` runs the binary without the CDK in between, returning its raw JSON messages: the
tests that check what the entrypoint would overwrite (e.g. `sourceStats`, which
`AirbyteEntrypoint.handle_record_counts` recomputes) use it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from airbyte_cdk.models import (
    AirbyteCatalog,
    AirbyteConnectionStatus,
    AirbyteMessage,
    AirbyteMessageSerializer,
    ConnectorSpecification,
    Type,
)
from airbyte_cdk.sources import Source
from airbyte_cdk.sources.message import InMemoryMessageRepository

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT_SECONDS = float(os.environ.get("POSTGATE_CLIENT_TIMEOUT", "600"))


def postgate_binary() -> Path:
    """The executable under test: $POSTGATE_BIN, else .build/debug/postgate of this repository."""
    raw = os.environ.get("POSTGATE_BIN") or str(REPO_ROOT / ".build" / "debug" / "postgate")
    path = Path(raw)
    if not path.is_absolute():
        path = (REPO_ROOT / path).resolve()
    return path


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "****")
    return text


def _tail(text: str, lines: int = 25) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept)


class PostgateExecutionError(Exception):
    """Postgate exited non-zero, or broke the protocol on stdout."""


@dataclass
class RawRun:
    """One run of the executable, without the CDK: raw JSON messages and what else it did."""

    argv: list[str]
    returncode: int
    messages: list[dict[str, Any]]
    non_json_lines: list[str]
    stderr: str
    seconds: float

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def errors(self) -> list[dict[str, Any]]:
        return [
            m for m in self.of_type("TRACE") if (m.get("trace") or {}).get("type") == "ERROR"
        ]

    def describe(self, secrets: Iterable[str] = ()) -> str:
        """A failure description: command, exit status, error traces and stderr tail, masked."""
        parts = [f"command: {' '.join(self.argv)}", f"exit status: {self.returncode}"]
        for error in self.errors():
            e = error["trace"]["error"]
            parts.append(
                f"TRACE ERROR ({e.get('failure_type')}): {e.get('message')}"
                + (f" | internal: {e.get('internal_message')}" if e.get("internal_message") else "")
            )
        if self.non_json_lines:
            parts.append(f"non-JSON stdout lines: {self.non_json_lines[:3]!r}")
        parts.append("stderr tail:\n" + (_tail(self.stderr) or "(empty)"))
        return mask("\n".join(parts), secrets)


def run_postgate(
    verb: str,
    *,
    config: Mapping[str, Any] | None = None,
    catalog: Mapping[str, Any] | None = None,
    state: Any = None,
    extra_args: list[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    env: Mapping[str, str] | None = None,
) -> RawRun:
    """Run `postgate <verb>` with inputs written to private temp files; return everything."""
    binary = postgate_binary()
    if not binary.is_file():
        raise FileNotFoundError(f"Postgate binary not found at {binary} (set POSTGATE_BIN)")
    with tempfile.TemporaryDirectory(prefix="postgate-client-") as tmp:
        tmpdir = Path(tmp)
        argv = [str(binary), verb]
        for flag, value in (("--config", config), ("--catalog", catalog), ("--state", state)):
            if value is None:
                continue
            path = tmpdir / f"{flag[2:]}.json"
            path.write_text(json.dumps(value))
            path.chmod(0o600)
            argv += [flag, str(path)]
        argv += extra_args or []
        started = time.monotonic()
        proc = subprocess.run(
            argv,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
        seconds = time.monotonic() - started
    messages: list[dict[str, Any]] = []
    non_json: list[str] = []
    # Split on "\n" only: str.splitlines() would also split inside JSON strings at U+2028 etc.
    for line in proc.stdout.decode("utf-8", errors="replace").split("\n"):
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            non_json.append(line[:300])
            continue
        if isinstance(parsed, dict) and "type" in parsed:
            messages.append(parsed)
        else:
            non_json.append(line[:300])
    return RawRun(
        argv=[Path(a).name if a.startswith(tmp) else a for a in argv],
        returncode=proc.returncode,
        messages=messages,
        non_json_lines=non_json,
        stderr=proc.stderr.decode("utf-8", errors="replace"),
        seconds=seconds,
    )


@dataclass
class _Run:
    argv: list[str]
    returncode: int | None = None
    messages: list[AirbyteMessage] = field(default_factory=list)
    stderr: str = ""


class PostgateSource(Source):
    """A `Source` that is the Postgate executable (see the module docstring)."""

    def __init__(self, executable: Path | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS):
        self.executable = Path(executable or postgate_binary())
        self.timeout = timeout
        self.message_repository = InMemoryMessageRepository()
        self._spec: ConnectorSpecification | None = None
        self._config_path: str | None = None
        self._secrets: list[str] = []
        self.runs: list[_Run] = []

    # -- Source plumbing -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return "source-postgate"

    def read_config(self, config_path: str) -> MutableMapping[str, Any]:  # type: ignore[override]
        self._config_path = config_path
        config = json.loads(Path(config_path).read_text())
        if not isinstance(config, MutableMapping):
            raise ValueError(f"{config_path} does not hold a JSON object")
        self._secrets = _secret_values(config)
        return config

    def configure(self, config: Mapping[str, Any], temp_dir: str) -> Mapping[str, Any]:
        return config

    def read_catalog(self, catalog_path: str) -> str:  # type: ignore[override]
        return catalog_path

    def read_state(self, state_path: str | None) -> str | None:  # type: ignore[override]
        return state_path

    # -- Commands ------------------------------------------------------------------------------

    def spec(self, logger: logging.Logger) -> ConnectorSpecification:
        if self._spec is None:
            run = self._run_collect(["spec"])
            specs = [m for m in run.messages if m.type == Type.SPEC]
            if run.returncode != 0 or len(specs) != 1:
                raise self._failure(run, f"expected exactly one SPEC message, got {len(specs)}")
            self._spec = specs[0].spec
        return self._spec

    def check(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteConnectionStatus:
        run = self._run_collect(["check", "--config", self._require_config()])
        primary = self._pass_on_all_but_last(run, Type.CONNECTION_STATUS)
        return primary.connectionStatus  # type: ignore[return-value]

    def discover(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteCatalog:
        run = self._run_collect(["discover", "--config", self._require_config()])
        primary = self._pass_on_all_but_last(run, Type.CATALOG)
        return primary.catalog  # type: ignore[return-value]

    def read(  # type: ignore[override]
        self,
        logger: logging.Logger,
        config: Mapping[str, Any],
        catalog: str,
        state: str | None = None,
    ) -> Iterator[AirbyteMessage]:
        args = ["read", "--config", self._require_config(), "--catalog", str(catalog)]
        if state:
            args += ["--state", str(state)]
        run = _Run(argv=self._argv(args))
        self.runs.append(run)
        with tempfile.TemporaryFile() as stderr_file:
            proc = subprocess.Popen(
                run.argv, stdout=subprocess.PIPE, stderr=stderr_file, stdin=subprocess.DEVNULL
            )
            timer = threading.Timer(self.timeout, proc.kill)
            timer.start()
            try:
                assert proc.stdout is not None
                for number, raw in enumerate(proc.stdout, start=1):
                    message = self._parse_line(raw, number, run)
                    if message is None:
                        continue
                    run.messages.append(message)
                    yield message
                run.returncode = proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                stderr_file.seek(0)
                run.stderr = stderr_file.read().decode("utf-8", errors="replace")
        if run.returncode != 0:
            raise self._failure(run, "read failed")

    # -- Helpers -------------------------------------------------------------------------------

    def _require_config(self) -> str:
        if not self._config_path:
            raise PostgateExecutionError("no --config was given")
        return self._config_path

    def _argv(self, args: list[str]) -> list[str]:
        return [str(self.executable), *args]

    def _parse_line(self, raw: bytes, number: int, run: _Run) -> AirbyteMessage | None:
        line = raw.strip()
        if not line:
            return None
        try:
            return AirbyteMessageSerializer.load(orjson.loads(line))
        except Exception as error:  # noqa: BLE001  # any failure is a protocol violation
            excerpt = mask(line[:200].decode("utf-8", errors="replace"), self._secrets)
            raise PostgateExecutionError(
                f"protocol violation: stdout line {number} of `{' '.join(run.argv[1:2])}` is not a "
                f"valid Airbyte message ({type(error).__name__}: {str(error)[:300]}): {excerpt!r}"
            ) from None

    def _run_collect(self, args: list[str]) -> _Run:
        run = _Run(argv=self._argv(args))
        self.runs.append(run)
        proc = subprocess.run(
            run.argv,
            capture_output=True,
            timeout=self.timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        run.returncode = proc.returncode
        run.stderr = proc.stderr.decode("utf-8", errors="replace")
        for number, raw in enumerate(proc.stdout.split(b"\n"), start=1):
            message = self._parse_line(raw, number, run)
            if message is not None:
                run.messages.append(message)
        return run

    def _pass_on_all_but_last(self, run: _Run, kind: Type) -> AirbyteMessage:
        """Queue every message except the last one of `kind`, which is returned.

        On a non-zero exit, or without any message of `kind`, everything is queued and the run
        fails: the entrypoint emits the queue before the error, so nothing Postgate said is lost.
        """
        indexes = [i for i, m in enumerate(run.messages) if m.type == kind]
        if run.returncode != 0 or not indexes:
            for message in run.messages:
                self.message_repository.emit_message(message)
            raise self._failure(run, f"expected a {kind.value} message, got {len(indexes)}")
        last = indexes[-1]
        for i, message in enumerate(run.messages):
            if i != last:
                self.message_repository.emit_message(message)
        return run.messages[last]

    def _failure(self, run: _Run, what: str) -> PostgateExecutionError:
        errors = [
            m.trace.error.message  # type: ignore[union-attr]
            for m in run.messages
            if m.type == Type.TRACE and m.trace and m.trace.error
        ]
        text = (
            f"`postgate {' '.join(run.argv[1:2])}` exited with status {run.returncode}; {what}. "
            f"Postgate's error traces: {errors or 'none'}. stderr tail: {_tail(run.stderr, 8)!r}"
        )
        return PostgateExecutionError(mask(text, self._secrets))


def _secret_values(config: Mapping[str, Any]) -> list[str]:
    """Every string under a key that holds a secret in Postgate's spec (for masking only)."""
    found: list[str] = []
    secret_keys = {
        "password",
        "ca_certificate",
        "client_certificate",
        "client_key",
        "client_key_password",
        "ssh_key",
        "ssh_key_passphrase",
        "tunnel_user_password",
        "entra_client_key",
    }

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in secret_keys and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(config)
    return found
