"""Start and stop the real `stack-server` binary for the end-to-end suites.

Nothing here imports STACK code: the suites talk to the server only over
HTTP, with clients written elsewhere (the `getstack` SDK, the official `mcp`
package, plain httpx).

Server contract used here:
  * binary: env STACK_SERVER_BIN, default <repo>/target/debug/stack-server
  * env: STACK_LISTEN=127.0.0.1:<port>, STACK_DATA_DIR=<dir>,
    optional STACK_DATABASE_URL=postgres://..., STACK_LOG
  * the first start prints the first operator's API key on stdout
    (a line containing sk_live_op_...); logs go to stderr
  * GET /healthz -> 200 {"status": "ok"} once ready
  * `<bin> operators create --name NAME` (same env) prints another key
  * SIGTERM stops it
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_RE = re.compile(r"sk_live_op_[A-Za-z0-9_-]+")
READY_TIMEOUT_S = float(os.environ.get("STACK_TEST_READY_TIMEOUT", "30"))
STOP_TIMEOUT_S = 15.0


class HarnessError(RuntimeError):
    """The server could not be started, reached or stopped as the contract says."""


def server_bin() -> Path:
    """The server binary, or a HarnessError that says how to get it."""
    raw = os.environ.get("STACK_SERVER_BIN")
    path = Path(raw) if raw else REPO_ROOT / "target" / "debug" / "stack-server"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise HarnessError(
            f"stack-server binary not found or not executable at {path}. "
            "Build it first with `cargo build -p stack-server`, "
            "or point STACK_SERVER_BIN at it."
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_name(prefix: str = "agent") -> str:
    """A fresh agent name that satisfies ^[a-z0-9][a-z0-9-]*[a-z0-9]$."""
    return f"{prefix}-{secrets.token_hex(4)}"


# --------------------------------------------------------------------------
# PostgreSQL: one fresh database per server
# --------------------------------------------------------------------------


def postgres_admin_url() -> str | None:
    url = os.environ.get("STACK_TEST_POSTGRES_URL", "").strip()
    return url or None


def backends() -> list[str]:
    return ["sqlite", "postgres"] if postgres_admin_url() else ["sqlite"]


def _with_database(url: str, dbname: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def create_postgres_database() -> tuple[str, str]:
    """CREATE DATABASE stack_e2e_<random>; returns (name, url for the server)."""
    import psycopg

    admin = postgres_admin_url()
    assert admin, "STACK_TEST_POSTGRES_URL is not set"
    name = f"stack_e2e_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, _with_database(admin, name)


def drop_postgres_database(name: str) -> None:
    import psycopg

    admin = postgres_admin_url()
    if not admin:
        return
    with psycopg.connect(admin, autocommit=True) as conn:
        try:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.errors.SyntaxError:  # PostgreSQL < 13
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------


@dataclass
class StackServer:
    """One running stack-server process with its own data directory/database."""

    backend: str = "sqlite"
    data_dir: Path | None = None
    database_url: str | None = None
    pg_dbname: str | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    api_key: str | None = None
    stdout_lines: list[str] = field(default_factory=list)
    stderr_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    _owns_data_dir: bool = False
    _reader: threading.Thread | None = None
    _key_seen: threading.Event = field(default_factory=threading.Event)

    # -- configuration ----------------------------------------------------

    @classmethod
    def fresh(cls, backend: str = "sqlite", extra_env: dict[str, str] | None = None) -> StackServer:
        srv = cls(backend=backend, extra_env=dict(extra_env or {}))
        srv.data_dir = Path(tempfile.mkdtemp(prefix=f"stack-e2e-{backend}-"))
        srv._owns_data_dir = True
        if backend == "postgres":
            srv.pg_dbname, srv.database_url = create_postgres_database()
        elif backend != "sqlite":
            raise ValueError(f"unknown backend {backend!r}")
        return srv

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Never let a developer's own database setting leak into a test server.
        env.pop("STACK_DATABASE_URL", None)
        env["STACK_LISTEN"] = f"127.0.0.1:{self.port}"
        env["STACK_DATA_DIR"] = str(self.data_dir)
        env.setdefault("STACK_LOG", "info")
        if self.database_url:
            env["STACK_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    # -- lifecycle --------------------------------------------------------

    def start(self, *, expect_key: bool = True) -> StackServer:
        """Start the binary and wait until /healthz answers (and, on a first
        start, until the operator key has been printed)."""
        binary = server_bin()
        assert self.data_dir is not None
        last_error: Exception | None = None
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            self.stdout_lines = []
            self._key_seen = threading.Event()
            self.stderr_path = self.data_dir.parent / f"{self.data_dir.name}.stderr.{self.port}.log"
            stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed by the process end
            self.proc = subprocess.Popen(
                [str(binary)],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=str(self.data_dir),
            )
            stderr.close()
            self._reader = threading.Thread(target=self._read_stdout, daemon=True)
            self._reader.start()
            try:
                self._await_ready(expect_key=expect_key)
                return self
            except HarnessError as exc:
                last_error = exc
                self._kill()
                if "Address already in use" not in self.stderr_tail():
                    break
        raise HarnessError(str(last_error))

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stdout_lines.append(line)
            m = KEY_RE.search(line)
            if m and self.api_key is None:
                self.api_key = m.group(0)
                self._key_seen.set()

    def _await_ready(self, *, expect_key: bool) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        healthy = False
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise HarnessError(
                        f"stack-server exited with code {self.proc.returncode} before it was ready.\n"
                        f"stderr tail:\n{self.stderr_tail()}"
                    )
                if not healthy:
                    try:
                        r = client.get(f"{self.base_url}/healthz")
                        if r.status_code == 200:
                            healthy = True
                    except httpx.TransportError:
                        pass
                if healthy and (not expect_key or self._key_seen.is_set()):
                    return
                # Wait for either the key line or the next health poll.
                self._key_seen.wait(0.05)
        what = "GET /healthz never returned 200" if not healthy else "no sk_live_op_ key line on stdout"
        raise HarnessError(
            f"stack-server not ready within {READY_TIMEOUT_S:.0f}s: {what}.\n"
            f"stdout: {self.stdout_lines!r}\nstderr tail:\n{self.stderr_tail()}"
        )

    def stop(self) -> int | None:
        """SIGTERM, then wait; returns the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise HarnessError(f"stack-server did not exit within {STOP_TIMEOUT_S}s of SIGTERM")
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.proc.returncode

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self) -> None:
        """Stop if running, then remove the data directory and any database."""
        try:
            self._kill()
        finally:
            if self.pg_dbname:
                drop_postgres_database(self.pg_dbname)
                self.pg_dbname = None
            if self._owns_data_dir and self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                if self.stderr_path is not None:
                    for p in self.data_dir.parent.glob(f"{self.data_dir.name}.stderr.*.log"):
                        p.unlink(missing_ok=True)

    def stderr_tail(self, n: int = 40) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        lines = self.stderr_path.read_text("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])

    # -- operators --------------------------------------------------------

    def create_operator(self, name: str | None = None) -> str:
        """Run `<bin> operators create --name NAME` on the same database; returns its key."""
        name = name or unique_name("op")
        proc = subprocess.run(
            [str(server_bin()), "operators", "create", "--name", name],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            cwd=str(self.data_dir),
        )
        out = proc.stdout.decode("utf-8", "replace")
        m = KEY_RE.search(out)
        if proc.returncode != 0 or not m:
            raise HarnessError(
                f"`stack-server operators create --name {name}` failed (exit {proc.returncode}).\n"
                f"stdout: {out}\nstderr: {proc.stderr.decode('utf-8', 'replace')}"
            )
        return m.group(0)


@dataclass
class ServerInfo:
    """What the `stack_server` fixture yields. Also indexable like a dict."""

    base_url: str
    api_key: str
    second_api_key: str
    backend: str
    server: StackServer

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def new_operator(self) -> str:
        """A brand-new operator (empty audit chain); returns its API key."""
        return self.server.create_operator()
