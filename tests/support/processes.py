"""Real processes for integration tests and benchmarks: gunicorn, Celery workers, Procfile lines, redis-server.

The one process harness of the project: tests/ and bench/ both start their processes with it (bench
imports `tests.support.processes`; it needs nothing from pytest). Requests are signed by the
provider's own signer (`providers.scheme_get(name).signed_request`), never here.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_env(database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def procfile_commands() -> dict[str, str]:
    """The Procfile's process types: name -> command line."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: command.strip() for name, command in (line.split(":", 1) for line in lines if line.strip())}


class Process:
    """One process in its own session, its output appended to `log_path`."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, *, name: str = ""):
        self.args = args
        self.name = name or Path(args[0]).name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @classmethod
    def shell(cls, command: str, env: dict[str, str], log_path: Path, *, name: str = "") -> "Process":
        """A command line (a Procfile line) through the shell, `exec`ed: the shell's pid is the command's."""
        return cls(["sh", "-c", f"exec {command}"], env, log_path, name=name)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> None:
        """SIGTERM goes to the main process only, as a process manager sends it (a Celery worker then
        finishes its running task: warm shutdown); SIGKILL goes to the whole group, as a crash would."""
        if self.alive():
            try:
                if sig == signal.SIGKILL:
                    os.killpg(self.popen.pid, sig)
                else:
                    os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()

    def ready_wait(self, ready, *, timeout: float = 60, what: str = "") -> None:
        """Until `ready()` is true; if the process exits or the time runs out, it is stopped and
        RuntimeError carries the end of its log."""
        what = what or self.name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not self.alive():
                self.stop()
                raise RuntimeError(f"{what} exited:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{what} not ready in {timeout:.0f}s:\n{self.log()[-3000:]}")

    def worker_ready_wait(self, *, timeout: float = 60) -> None:
        self.ready_wait(lambda: " ready." in self.log(), timeout=timeout, what=f"worker {self.name}")


def worker_start(
    env: dict[str, str], log_path: Path, *, concurrency: int = 1, beat: bool = False, name: str = "w1", app: str = "config"
) -> Process:
    args = [
        str(BIN / "celery"), "-A", app, "worker", "--loglevel", "INFO", "--concurrency", str(concurrency),
        "--queues", env.get("CELERY_QUEUE", "payhook"), "--pool", "prefork", "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
    ]
    if beat:
        args += ["--beat", "--schedule", str(log_path.with_suffix(".beat"))]
    process = Process(args, env, log_path, name=name)
    process.worker_ready_wait()
    return process


def http_status(port: int, path: str = "/healthz") -> int:
    """The status of a GET on loopback, 0 when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            return int(sock.recv(64).split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return 0


def web_start(env: dict[str, str], log_path: Path, *, workers: int = 1) -> tuple[Process, str]:
    port = free_port()
    env = {**env, "WEB_CONCURRENCY": str(workers)}
    args = [str(BIN / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{port}", "--config", "config/gunicorn.py"]
    process = Process(args, env, log_path, name="web")
    process.ready_wait(lambda: http_status(port) == 200, what="web")
    return process, f"http://127.0.0.1:{port}"


def procfile_web_start(
    env: dict[str, str], log_path: Path, *, workers: int, wsgi: str = "config.wsgi:application", ready=lambda process: True
) -> tuple[Process, int]:
    """The Procfile's `web` line as is (optionally serving another WSGI application) on a free port;
    returns once /healthz answers 200 and `ready(process)` (a caller's extra condition) holds."""
    command = procfile_commands()["web"]
    if wsgi != "config.wsgi:application":
        assert "config.wsgi:application" in command, command
        command = command.replace("config.wsgi:application", wsgi)
    port = free_port()
    env = {**env, "WEB_CONCURRENCY": str(workers), "BIND": f"127.0.0.1:{port}", "PORT": str(port)}
    process = Process.shell(command, env, log_path, name="web")
    process.ready_wait(lambda: http_status(port) == 200 and ready(process), what="web")
    return process, port


def wait_for(predicate, *, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private redis-server on a free loopback port that a test may kill and restart."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log_dir = log_dir
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self._log_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis_ready(self.port), timeout=10, message="redis-server up")

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(5)
            self._process = None
