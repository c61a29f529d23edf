"""A real ``redis-server`` for the tests: own port, own directory, AOF on.

Tests never touch a Redis already running on the machine (6379): each starts
its own on a free port with its data in a temporary directory, persisting
with an append-only file (``appendfsync everysec`` by default, as shipped, or
``always``), and can stop it gracefully, kill it with SIGKILL, and start it
again on the same port and directory (so it reloads its AOF).

Use ``RedisServer.start(tmp_path)`` (or ``with RedisServer.start(...) as r``);
the test modules wrap it in fixtures. If the binary is missing the fixture
fails, saying how to install it; nothing is skipped.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest
import redis

from commands.procs import free_port

INSTALL_HINT = (
    "redis-server not found on PATH: the replay's Redis tests start a real server. "
    "Install it with `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis`"
)


def redis_server_binary() -> str:
    """Path of redis-server; pytest.fail with the install hint when it is missing."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return path


class RedisServer:
    """One redis-server process that can be stopped, killed and restarted in place."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendfsync: str = "everysec",
        password: str | None = None,
        tls: bool = False,
    ) -> None:
        if appendfsync not in ("everysec", "always"):
            raise ValueError(f"appendfsync must be everysec or always, got {appendfsync!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        if tls:
            self._make_certificate()

    @classmethod
    def start(
        cls,
        directory: Path,
        *,
        appendfsync: str = "everysec",
        password: str | None = None,
        tls: bool = False,
        timeout: float = 20.0,
    ) -> RedisServer:
        """A running server in directory (created if needed); tls: TLS only, with a
        self-signed certificate for 127.0.0.1 (``ca_path``)."""
        server = cls(directory, appendfsync=appendfsync, password=password, tls=tls)
        server.run(timeout)
        return server

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0`` (``rediss://...?ssl_ca_certs=CA`` with TLS)."""
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_path}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def ca_path(self) -> Path:
        return self.directory / "cert.pem"

    def _make_certificate(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.fail(
                "openssl not found on PATH: the TLS test makes a certificate with it. "
                "Install it with `apt-get install openssl`",
                pytrace=False,
            )
        subprocess.run(
            [
                *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", str(self.directory / "key.pem"), "-out", str(self.ca_path)),
                *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            ],
            check=True,
            capture_output=True,
        )

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def client(self) -> redis.Redis:
        """A plain client of this server (for the tests' own looks inside)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=5,
            ssl=self.tls,
            ssl_ca_certs=str(self.ca_path) if self.tls else None,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def run(self, timeout: float = 20.0) -> None:
        """Start the process (reloading the AOF in directory) and wait for PING."""
        if self.alive():
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        args = [
            redis_server_binary(),
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--dir", str(self.directory), "--logfile", str(self.log_path)),
            *("--appendonly", "yes", "--appendfsync", self.appendfsync),
            *("--save", ""),  # AOF only: what we ship and document
            *("--daemonize", "no"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:  # TLS only: the plain port closed
            args[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            args += [
                *("--tls-cert-file", str(self.ca_path)),
                *("--tls-key-file", str(self.directory / "key.pem")),
                *("--tls-ca-cert-file", str(self.ca_path), "--tls-auth-clients", "no"),
            ]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                if not self.alive():
                    raise RuntimeError(
                        f"redis-server exited with code {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server not answering PING:\n{self.log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: Redis flushes and fsyncs its AOF, then exits."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (only fsynced AOF survives)."""
        self._signal(signal.SIGKILL, 10.0)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port and directory."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.run()

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
