"""Production defaults: the compose topology, the proxy, the image, and `check --deploy` under compose.

There is no container engine where the tests run, so these read the files the engine would read
and run what the containers would run (Django's deploy checks) with compose's environment.
"""

import fnmatch
import json
import os
import re
import secrets
import subprocess
import sys
import tomllib

import pytest
import yaml
from cryptography.fernet import Fernet
from django.conf import settings

ROOT = settings.BASE_DIR
APP_SERVICES = ("web", "worker", "beat")
REQUIRED_SECRETS = {
    "DJANGO_SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "BLIND_INDEX_KEY", "POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD",
    "AUDIT_CHAIN_KEY",
    "REDIS_PASSWORD", "PAYHOOK_DOMAIN",
}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[?-])([^}]*))?\}")


def compose() -> dict:
    with open(ROOT / "docker-compose.yml") as fh:
        return yaml.safe_load(fh)


def compose_resolve(value: str, supplied: dict[str, str]) -> str:
    """Interpolate as compose does: supplied values win, `:-` falls back, `:?` must be supplied."""

    def substitute(match: re.Match) -> str:
        name, operator, argument = match.groups()
        if name in supplied:
            return supplied[name]
        if operator and operator.endswith("-"):
            return argument
        raise AssertionError(f"${{{name}}} is required by docker-compose.yml but the test supplied no value")

    return _INTERPOLATION.sub(substitute, str(value)).replace("$$", "$")


def strong_compose_variables() -> dict[str, str]:
    # What an operator puts in the production env file: long random values (Django warns on weak keys).
    values = {name: secrets.token_hex(32) for name in REQUIRED_SECRETS}
    values.update(
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        PAYHOOK_DOMAIN="payhook.example.com",
    )
    return values


def service_environment(service: str) -> dict[str, str]:
    supplied = strong_compose_variables()
    return {key: compose_resolve(value, supplied) for key, value in compose()["services"][service]["environment"].items()}


def run_python(code_or_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    # Only compose's environment (plus PATH): nothing from the test process leaks into the result.
    return subprocess.run(
        [sys.executable, *code_or_args], cwd=ROOT, env={"PATH": os.environ["PATH"], **env},
        capture_output=True, text=True, timeout=120,
    )


# --- docker-compose.yml ---------------------------------------------------------------------------


def test_only_the_proxy_publishes_ports_and_gunicorn_is_reachable_on_the_compose_network_only():
    services = compose()["services"]

    published = {name for name, service in services.items() if "ports" in service}
    assert published == {"proxy"}
    assert {str(port).split(":")[0] for port in services["proxy"]["ports"]} == {"80", "443"}
    assert services["web"]["expose"] == ["8000"]
    assert services["proxy"]["image"] == "caddy:2"
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in services["proxy"]["volumes"]
    assert services["proxy"]["depends_on"]["web"]["condition"] == "service_healthy"


def test_every_interpolated_variable_is_either_required_or_has_a_default():
    text = (ROOT / "docker-compose.yml").read_text()
    uses = _INTERPOLATION.findall(text)

    assert not [name for name, operator, _ in uses if operator not in (":?", ":-")]
    required = {name for name, operator, _ in uses if operator == ":?"}
    assert REQUIRED_SECRETS <= required
    # A secret never silently falls back to a default somewhere else in the file.
    assert not [name for name, operator, _ in uses if name in REQUIRED_SECRETS and operator != ":?"]


def test_app_services_run_with_debug_off_behind_the_tls_proxy_and_with_every_secret():
    services = compose()["services"]

    for name in (*APP_SERVICES, "migrate"):
        env = services[name]["environment"]
        assert env["DJANGO_DEBUG"] == "false"
        assert env["DJANGO_BEHIND_TLS_PROXY"] == "true"
        assert {"DJANGO_SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "BLIND_INDEX_KEY", "DJANGO_ALLOWED_HOSTS"} <= set(env)
        assert "AUDIT_CHAIN_KEY" in env
        assert env["CELERY_BROKER_URL"].startswith("redis://:${REDIS_PASSWORD:?")
        assert env["CELERY_BROKER_URL"].endswith("@redis:6379/0")


def test_redis_requires_a_password_keeps_its_queue_on_disk_and_its_healthcheck_authenticates():
    redis = compose()["services"]["redis"]
    command = redis["command"]

    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    # `redis-cli ping` exits 0 even when it gets NOAUTH back: only a PONG counts as healthy.
    assert "grep -q PONG" in " ".join(redis["healthcheck"]["test"])


def test_migrations_run_once_as_the_schema_owner_and_the_app_connects_as_the_restricted_role():
    services = compose()["services"]
    migrate = services["migrate"]

    assert migrate["environment"]["DATABASE_URL"].startswith("postgres://payhook:${POSTGRES_PASSWORD:?")
    assert "check --deploy --fail-level WARNING" in " ".join(migrate["command"])
    assert "migrate --no-input" in " ".join(migrate["command"])
    for name in APP_SERVICES:
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgres://payhook_app:")
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "migrate" not in " ".join(services[name]["command"])
    assert "./deploy/postgres:/docker-entrypoint-initdb.d:ro" in services["postgres"]["volumes"]
    script = ROOT / "deploy" / "postgres" / "10-app-role.sh"
    assert os.access(script, os.X_OK)


def test_the_web_healthcheck_host_is_allowed_and_answers_over_plain_http():
    web_env = service_environment("web")
    probe = " ".join(compose()["services"]["web"]["healthcheck"]["test"])

    host = re.search(r"http://([\w.-]+):8000/healthz", probe).group(1)
    assert host in web_env["DJANGO_ALLOWED_HOSTS"].split(",")
    assert "payhook.example.com" in web_env["DJANGO_ALLOWED_HOSTS"].split(",")


# --- deploy/Caddyfile -----------------------------------------------------------------------------


def _size_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*([KMG]i?B)", text).groups()
    base = 1024 if "i" in unit else 1000
    return int(number) * base ** ("KMG".index(unit[0]) + 1)


def test_caddy_terminates_tls_for_the_domain_buffers_requests_and_caps_bodies_just_above_the_app_limit():
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    directives = [line.strip() for line in caddyfile.splitlines() if line.strip() and not line.strip().startswith("#")]

    assert "{$PAYHOOK_DOMAIN} {" in directives  # a site address: automatic HTTPS for that name
    # Slow clients are cut off by Caddy's server timeouts (global options block, before the site).
    assert directives[0] == "{" and "read_header 10s" in directives and "read_body 30s" in directives
    assert "reverse_proxy web:8000 {" in directives
    max_size = _size_bytes(next(d.split()[1] for d in directives if d.startswith("max_size ")))
    request_buffers = _size_bytes(next(d.split()[1] for d in directives if d.startswith("request_buffers ")))
    # The app must get the chance to answer its own JSON 413 just past WEBHOOK_MAX_BODY_BYTES.
    assert settings.WEBHOOK_MAX_BODY_BYTES < max_size <= 2 * settings.WEBHOOK_MAX_BODY_BYTES
    # The whole body is read before gunicorn sees the request: slow senders occupy Caddy only.
    assert request_buffers >= max_size
    assert any(d.startswith("response_buffers ") for d in directives)
    assert not any(d.startswith("flush_interval -") for d in directives)
    assert "header_up X-Forwarded-Proto {scheme}" in directives
    assert "respond @internal 404" in directives and "@internal path /metrics" in directives


def test_gunicorn_believes_x_forwarded_for_only_from_the_compose_network_caddy_is_on():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    trusted = compose["x-env"]["WEBHOOK_TRUSTED_PROXIES"]
    assert trusted == f"${{WEBHOOK_TRUSTED_PROXIES:-{subnet}}}"
    assert "ports" not in compose["services"]["web"]  # reachable only through the proxy on that network


# --- Dockerfile and .dockerignore ------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_fails_loudly_runs_as_a_non_root_user_and_has_a_healthcheck():
    instructions = _dockerfile_instructions()
    runs = [arg for op, arg in instructions if op == "RUN"]

    assert not [run for run in runs if re.search(r"\|\|\s*(true|:)\b", run)]
    users = [arg.strip() for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert any(op == "HEALTHCHECK" and "/healthz" in arg for op, arg in instructions)
    assert any("collectstatic --no-input" in run for run in runs)
    assert not any(re.search(r"pip install[^&]*\s-e\b", run) for run in runs)


def test_dockerfile_installs_the_pinned_dependencies_before_copying_the_source():
    instructions = _dockerfile_instructions()
    copy_all = instructions.index(("COPY", ". ."))
    install = next(i for i, (op, arg) in enumerate(instructions) if op == "RUN" and "pip install" in arg)
    assert install < copy_all
    assert [arg for op, arg in instructions[:install] if op == "COPY"] == ["pyproject.toml ./"]

    # The requirements it generates are exactly pyproject's pinned dependencies.
    code = re.search(r'python -c "(.+?)"\s+>', instructions[install][1]).group(1)
    generated = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    with open(ROOT / "pyproject.toml", "rb") as fh:
        assert generated.stdout.split() == tomllib.load(fh)["project"]["dependencies"]


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, closely enough: the last matching pattern wins, `!` re-includes, and a
    pattern that matches a directory excludes everything under it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        candidates = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        for prefix in prefixes:
            suffixes = ["/".join(prefix.split("/")[i:]) for i in range(len(prefix.split("/")))]
            if any(fnmatch.fnmatchcase(s, c) for c in candidates for s in (suffixes if c != pattern else [prefix])):
                excluded = not negate
                break
    return excluded


def test_dockerignore_keeps_development_keys_local_state_and_tests_out_of_the_image():
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert ".env" in patterns and ".venv" in patterns

    left_out = [
        ".env", ".env.production", ".venv/bin/python", "var/payhook.sqlite3", "var/broker/x.msg", ".git/HEAD",
        "tests/conftest.py", "bench/results/ingest.json", "webhooks/__pycache__/models.cpython-311.pyc",
        "docs/screenshots/admin.png",
    ]
    kept = [
        "manage.py", "pyproject.toml", "config/settings.py", "webhooks/models.py", "docs/operations.md",
        "config/gunicorn.py",
    ]
    assert [path for path in left_out if not _dockerignored(path, patterns)] == []
    assert [path for path in kept if _dockerignored(path, patterns)] == []


# --- Settings ------------------------------------------------------------------------------------


def test_manage_py_check_deploy_is_clean_under_composes_environment():
    env = service_environment("web")
    env["DATABASE_URL"] = os.environ["DATABASE_URL"]

    result = run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr
    assert '"level": "warning"' not in result.stdout + result.stderr  # log lines are JSON (docs/logging.md)


def test_compose_environment_turns_on_https_only_settings():
    env = service_environment("web")
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; print(json.dumps({k: getattr(s, k) "
        "for k in ['DEBUG', 'SECURE_PROXY_SSL_HEADER', 'SECURE_SSL_REDIRECT', 'SESSION_COOKIE_SECURE', "
        "'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD']}))"
    )

    result = run_python(["-c", code], {**env, "DJANGO_SETTINGS_MODULE": "config.settings"})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "DEBUG": False,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": False,
    }


def test_without_the_proxy_flag_plain_http_serves_as_make_run_needs():
    # The test process runs with the same defaults as `make run` (DEBUG off, no proxy).
    assert settings.DEBUG is False
    assert settings.SECURE_SSL_REDIRECT is False
    assert settings.SESSION_COOKIE_SECURE is False and settings.CSRF_COOKIE_SECURE is False
    assert not hasattr(settings, "SECURE_PROXY_SSL_HEADER") or settings.SECURE_PROXY_SSL_HEADER is None


@pytest.fixture
def behind_tls_proxy(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True


@pytest.mark.django_db
def test_behind_the_proxy_plain_http_is_redirected_except_health_probes(behind_tls_proxy, client):
    redirected = client.get("/api/v1/events/")
    assert redirected.status_code == 301
    assert redirected["Location"] == "https://testserver/api/v1/events/"

    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code in (200, 503), path


@pytest.mark.django_db
def test_behind_the_proxy_https_requests_get_hsts_and_the_hardening_headers(behind_tls_proxy, client):
    response = client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    webhook = client.post("/webhooks/no-such-endpoint/", data=b"{}", content_type="application/json",
                          headers={"X-Forwarded-Proto": "https"})

    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert webhook.status_code == 404 and webhook.json() == {"error": "unknown_endpoint"}


def test_plain_http_responses_never_carry_hsts(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response


def test_a_deployment_that_forgets_the_proxy_flag_fails_check_deploy():
    # Plain-HTTP defaults are safe only because forgetting the flag cannot go unnoticed.
    env = service_environment("web")
    env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    del env["DJANGO_BEHIND_TLS_PROXY"]

    result = run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)

    assert result.returncode != 0
    for check in ("security.W008", "security.W012", "security.W016"):
        assert check in result.stderr + result.stdout
