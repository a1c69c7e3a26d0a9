"""Real processes for integration tests: Celery workers and gunicorn, on the test database."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

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


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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


def worker_start(
    env: dict[str, str], log_path: Path, *, concurrency: int = 1, beat: bool = False, name: str = "w1", app: str = "config"
) -> Process:
    args = [
        str(BIN / "celery"), "-A", app, "worker", "--loglevel", "INFO", "--concurrency", str(concurrency),
        "--queues", env.get("CELERY_QUEUE", "payhook"), "--pool", "prefork", "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
    ]
    if beat:
        args += ["--beat", "--schedule", str(log_path.with_suffix(".beat"))]
    process = Process(args, env, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if " ready." in process.log():
            return process
        if not process.alive():
            raise RuntimeError(f"worker exited:\n{process.log()[-3000:]}")
        time.sleep(0.2)
    process.stop()
    raise RuntimeError(f"worker not ready in time:\n{process.log()[-3000:]}")


def web_start(env: dict[str, str], log_path: Path, *, workers: int = 1) -> tuple[Process, str]:
    port = free_port()
    env = {**env, "WEB_CONCURRENCY": str(workers)}
    args = [str(BIN / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{port}", "--config", "config/gunicorn.py"]
    process = Process(args, env, log_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        if not process.alive():
            raise RuntimeError(f"web exited:\n{process.log()[-3000:]}")
        time.sleep(0.2)
    process.stop()
    raise RuntimeError(f"web not ready in time:\n{process.log()[-3000:]}")


def wait_for(predicate, *, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


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
        wait_for(self._ready, timeout=10, message="redis-server up")

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(5)
            self._process = None

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
