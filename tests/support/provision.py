"""pytest plugin: everything a test run needs, set up by the run itself (`-p tests.support.provision`).

Django reads its settings at import time and pytest-django imports them while pytest starts, so
this runs first (a `pytest_load_initial_conftests` wrapper):

1. Scrubs the developer's configuration: every variable documented in .env.example (SENTRY_DSN,
   EMAIL_*, DJANGO_DEBUG, DATABASE_URL, ...) is removed from the environment, and settings are told
   not to read the checkout's .env (`PAYHOOK_READ_DOTENV=false`).
2. Finds PostgreSQL and Redis: `TEST_DATABASE_URL` / `TEST_BROKER_URL` name servers to use (the run
   then uses its own database name and queue name on them); otherwise it starts private, throwaway
   servers from the machine's binaries on free loopback ports in a temporary directory, stopped and
   deleted when the run ends (also on Ctrl-C or failure). A missing binary is installed with
   apt-get when we are root on a Debian-like machine; otherwise the run stops with one line saying
   what to install.
3. Chromium and chromedriver, only when a selected test drives the browser, the same way.

Every run also gets its own Celery queue name, so two runs sharing a broker cannot take each
other's tasks.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.processes import free_port, redis_ready

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = secrets.token_hex(4)

# Not documented in .env.example but still read from the environment by Django or pytest-django.
ALSO_SCRUBBED = ("DJANGO_SETTINGS_MODULE", "CELERY_QUEUE", "PAYHOOK_READ_DOTENV")

BROWSER_FIXTURE = "browser"
chromium_key = pytest.StashKey["Chromium | str"]()


class ProvisionError(Exception):
    """A tool the run needs is missing and could not be installed; the message says what to do."""


# --- Environment --------------------------------------------------------------------------------


def configuration_names(env_example: Path = ROOT / ".env.example") -> set[str]:
    names = set(re.findall(r"^([A-Z0-9_]+)=", env_example.read_text(), re.M))
    return names | set(ALSO_SCRUBBED)


def environment_scrub(environ) -> list[str]:
    """Remove every payhook configuration variable from `environ`; returns the names removed."""
    removed = sorted(name for name in configuration_names() if name in environ)
    for name in removed:
        del environ[name]
    return removed


# --- Tools: find, or install with apt-get -------------------------------------------------------


def apt_install(packages: list[str]) -> str:
    """Install Debian packages when we are root on a machine with apt-get; returns '' or why not."""
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "not root, so not installing it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=600", *packages]
    print(f"payhook tests: installing {' '.join(packages)} with apt-get (once per machine) ...", file=sys.stderr, flush=True)
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, text=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        return f"apt-get install failed: {last[0]}"
    return ""


def tool_ensure(what: str, find, packages: list[str], alternative: str = ""):
    """`find()` the tool, installing `packages` when it is missing; ProvisionError when impossible."""
    found = find()
    if found:
        return found
    why = apt_install(packages)
    found = None if why else find()
    if found:
        return found
    raise ProvisionError(
        f"payhook tests need {what}: install it (Debian/Ubuntu: apt-get install {' '.join(packages)}){alternative}"
        f" [{why or 'still missing after apt-get install'}]"
    )


def postgres_bindir() -> Path | None:
    candidates = [Path(p).parent for p in [shutil.which("initdb")] if p]
    # Debian keeps server binaries off PATH, one directory per major version; RHEL likewise.
    versioned = glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin")
    candidates += sorted((Path(p) for p in versioned), key=lambda p: _version_key(str(p)), reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    return None


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


@dataclass(frozen=True)
class Chromium:
    binary: str
    driver: str


def chromium_find() -> Chromium | None:
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    return Chromium(binary, driver) if binary and driver else None


def chromium_ensure() -> Chromium:
    return tool_ensure("Chromium and chromedriver (for tests/browser/)", chromium_find, ["chromium", "chromium-driver"])


# --- Private servers ----------------------------------------------------------------------------


def _die_with_parent(sig: int):
    """preexec_fn: the server gets `sig` if the test run itself is killed (SIGKILL leaves no cleanup)."""

    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG

    return preexec


def _wait(ready, process: subprocess.Popen, what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
    raise ProvisionError(f"private {what} did not start: {' | '.join(tail) or 'no log'}")


def _stop(process: subprocess.Popen | None, sig: int) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class PrivateServers:
    """A throwaway PostgreSQL and Redis for one test run, in one temporary directory."""

    def __init__(self) -> None:
        self._remove_leftovers()
        self.dir = Path(tempfile.mkdtemp(prefix="payhook-test-"))
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        self.postgres: subprocess.Popen | None = None
        self.redis: subprocess.Popen | None = None
        self.database_url = ""
        self.broker_url = ""

    def start(self, *, postgres: bool, redis: bool) -> None:
        if postgres:
            self._postgres_start(tool_ensure("PostgreSQL server binaries (initdb, postgres)", postgres_bindir,
                                             ["postgresql"], " or set TEST_DATABASE_URL"))
        if redis:
            self._redis_start(tool_ensure("redis-server", lambda: shutil.which("redis-server"), ["redis-server"],
                                          " or set TEST_BROKER_URL"))

    def stop(self) -> None:
        _stop(self.postgres, signal.SIGINT)  # PostgreSQL's fast shutdown: ends sessions, no checkpoint wait
        _stop(self.redis, signal.SIGTERM)
        self.postgres = self.redis = None
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _remove_leftovers() -> None:
        """Directories of runs that were killed outright (their servers died with them)."""
        for owner in Path(tempfile.gettempdir()).glob("payhook-test-*/owner.pid"):
            try:
                os.kill(int(owner.read_text()), 0)
            except ProcessLookupError:
                shutil.rmtree(owner.parent, ignore_errors=True)
            except (OSError, ValueError):
                pass

    def _postgres_start(self, bindir: Path) -> None:
        data, log = self.dir / "postgres", self.dir / "postgres.log"
        # PostgreSQL refuses to run as root; the machine's own service account, or nobody, runs it.
        user = None
        if os.geteuid() == 0:
            user = "postgres" if _user_exists("postgres") else "nobody"
            os.chown(self.dir, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale",
             "--no-sync", "--no-instructions"],
            capture_output=True, text=True, user=user, cwd=self.dir,
        )
        if initdb.returncode != 0:
            raise ProvisionError(f"initdb failed: {(initdb.stderr.strip().splitlines() or ['no output'])[-1]}")
        for _attempt in range(3):  # another process may take the free port before the server binds it
            port = free_port()
            with open(log, "ab") as log_file:
                self.postgres = subprocess.Popen(
                    # Durability is worthless for a throwaway database; speed is not.
                    [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", "",
                     "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                     "-c", "max_connections=200"],
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, user=user, cwd=self.dir,
                    start_new_session=True, preexec_fn=_die_with_parent(signal.SIGINT),
                )
            self.database_url = f"postgres://postgres@127.0.0.1:{port}/payhook"
            try:
                _wait(lambda: _postgres_ready(self.database_url), self.postgres, "PostgreSQL", log)
                return
            except ProvisionError:
                _stop(self.postgres, signal.SIGINT)
                if _attempt == 2:
                    raise

    def _redis_start(self, redis_server: str) -> None:
        log = self.dir / "redis.log"
        for _attempt in range(3):
            port = free_port()
            self.redis = subprocess.Popen(
                [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.dir), "--logfile", str(log), "--daemonize", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent(signal.SIGTERM),
            )
            self.broker_url = f"redis://127.0.0.1:{port}/0"
            try:
                _wait(lambda: redis_ready(port), self.redis, "Redis", log)
                return
            except ProvisionError:
                _stop(self.redis, signal.SIGTERM)
                if _attempt == 2:
                    raise


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _postgres_ready(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=1):
            return True
    except psycopg.OperationalError:
        return False


# --- Servers named by the developer -------------------------------------------------------------


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=3):
            return True
    except OSError:
        return False


def external_database_url(url: str) -> str:
    """The run's own database on a named server: pytest-django creates test_<name>_<run id> and drops it."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ProvisionError(f"TEST_DATABASE_URL must be a postgres:// URL, not {parts.scheme}://")
    if not _reachable(url, 5432):
        raise ProvisionError(f"TEST_DATABASE_URL names {parts.hostname}:{parts.port or 5432}, where nothing answers; "
                             "unset it to let the run start its own PostgreSQL")
    name = parts.path.lstrip("/") or "payhook"
    return urlunsplit(parts._replace(path=f"/{name}_{RUN_ID}"))


def external_broker_url(url: str) -> str:
    if not url.startswith("redis://"):
        raise ProvisionError("TEST_BROKER_URL must be a redis:// URL")
    if not _reachable(url, 6379):
        raise ProvisionError(f"TEST_BROKER_URL names {urlsplit(url).netloc}, where nothing answers; "
                             "unset it to let the run start its own Redis")
    return url


# --- Hooks --------------------------------------------------------------------------------------


def _terminate_as_interrupt(signum, frame) -> None:
    """SIGTERM (a CI job cancelled) ends the run like Ctrl-C, so the private servers are stopped and removed."""
    if os.getpid() == _MAIN_PID:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)  # a forked child dies as it would have
    os.kill(os.getpid(), signum)


_MAIN_PID = os.getpid()


def _provision(config: pytest.Config) -> None:
    database_url = os.environ.get("TEST_DATABASE_URL", "")
    broker_url = os.environ.get("TEST_BROKER_URL", "")
    environment_scrub(os.environ)
    os.environ["PAYHOOK_READ_DOTENV"] = "false"
    os.environ["CELERY_QUEUE"] = f"payhook-test-{RUN_ID}"

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    # Named servers are checked first: a wrong one stops the run before anything is started.
    database_url = external_database_url(database_url) if database_url else ""
    broker_url = external_broker_url(broker_url) if broker_url else ""
    if not (database_url and broker_url):
        servers = PrivateServers()
        atexit.register(servers.stop)  # also when pytest stops before its own cleanup is registered
        config.add_cleanup(servers.stop)
        servers.start(postgres=not database_url, redis=not broker_url)
        database_url = database_url or servers.database_url
        broker_url = broker_url or servers.broker_url
    os.environ["DATABASE_URL"] = database_url
    os.environ["CELERY_BROKER_URL"] = broker_url


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]):
    options = parser.parse_known_args(args)
    if not (options.help or options.version):
        try:
            _provision(early_config)
        except ProvisionError as exc:
            raise pytest.UsageError(str(exc)) from None
    return (yield)


def pytest_report_header(config: pytest.Config) -> str:
    postgres = "TEST_DATABASE_URL" if os.environ.get("TEST_DATABASE_URL") else "private"
    redis = "TEST_BROKER_URL" if os.environ.get("TEST_BROKER_URL") else "private"
    return f"payhook: PostgreSQL {postgres}, Redis {redis}, Celery queue {os.environ.get('CELERY_QUEUE')}"


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Installs Chromium before the first test when a selected test drives it, outside any test timeout."""
    if any(BROWSER_FIXTURE in getattr(item, "fixturenames", ()) for item in session.items):
        try:
            session.config.stash[chromium_key] = chromium_ensure()
        except ProvisionError as exc:
            session.config.stash[chromium_key] = str(exc)


def chromium_for(config: pytest.Config) -> Chromium:
    """The browser fixture's Chromium; fails the test with the reason when it could not be provided."""
    found = config.stash.get(chromium_key, None)
    if found is None:
        try:
            found = chromium_ensure()
        except ProvisionError as exc:
            found = str(exc)
    if isinstance(found, str):
        pytest.fail(found, pytrace=False)
    return found
