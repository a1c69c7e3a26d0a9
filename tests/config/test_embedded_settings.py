"""The embedded default's settings, static files in every mode, and `make run`'s preflight."""

import json
import os
import re
import socket
import subprocess
import sys

from django.conf import settings
from django.contrib.auth import get_user_model

from config import devrun
from config.devenv import dev_settings


def _embedded_settings(tmp_path) -> dict:
    """Settings as `make run` sees them: no DATABASE_URL, no CELERY_BROKER_URL, var/ moved to tmp_path."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("DATABASE_URL", "CELERY_BROKER_URL", "EMAIL_BACKEND", "EMAIL_FILE_PATH")}
    env["PAYHOOK_VAR_DIR"] = str(tmp_path / "var")
    code = (
        "import json; from django.conf import settings as s; print(json.dumps({"
        "'db': s.DATABASES['default']['NAME'], 'broker': s.CELERY_BROKER_URL, 'options': s.CELERY_BROKER_TRANSPORT_OPTIONS,"
        "'beat': s.CELERY_BEAT_SCHEDULE_FILENAME, 'email': s.EMAIL_BACKEND, 'mail': s.EMAIL_FILE_PATH}))"
    )
    result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=settings.BASE_DIR,
                            env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_embedded_default_writes_only_under_its_var_directory(tmp_path):
    var = tmp_path / "var"
    embedded = _embedded_settings(tmp_path)

    assert embedded["db"] == str(var / "payhook.sqlite3")
    assert embedded["broker"].startswith("filesystem://")
    # kombu's default control folder is ./control in the working directory (it used to be committed).
    assert embedded["options"]["control_folder"] == str(var / "broker" / "control")
    assert embedded["options"]["data_folder_in"] == embedded["options"]["data_folder_out"] == str(var / "broker")
    assert embedded["beat"] == str(var / "celerybeat-schedule")
    assert not (settings.BASE_DIR / "control").exists()


def test_mail_goes_to_files_never_to_the_console_by_default(tmp_path):
    embedded = _embedded_settings(tmp_path)

    assert embedded["email"] == "django.core.mail.backends.filebased.EmailBackend"
    assert embedded["mail"] == str(tmp_path / "var" / "mail")
    # `make run` writes files too (and replaces the console backend an older version wrote, tests/config/test_devenv.py).
    assert dev_settings()["EMAIL_BACKEND"] == "config.mail.FileEmailBackend"


def test_the_admin_stylesheet_is_served_without_collectstatic(client):
    response = client.get("/static/admin/css/base.css")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    assert b"".join(response.streaming_content)


def test_make_run_refuses_a_taken_port_in_one_line(capsys):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        assert devrun.main(["devrun.py", "--check", str(port)]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"port {port} is taken: stop what uses it or run `make run PORT={port + 1}`\n"


def test_make_run_banner_names_the_urls_and_the_first_commands(capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    assert devrun.main(["devrun.py", str(port)]) == 0

    out = capsys.readouterr().out
    base = f"http://127.0.0.1:{port}"
    for expected in (f"{base}/", f"{base}/admin/", f"{base}/api/v1/", f"{base}/api/docs/", "createsuperuser",
                     "webhook_endpoint create stripe", "import_catalog docs/examples/catalog.json",
                     f"send_test_webhook stripe checkout.session.completed --url {base}/webhooks/stripe/"):
        assert expected in out


def test_api_docs_need_a_login_and_load_swagger_ui_from_our_own_static_files(client, db):
    from django.contrib.auth.models import Group

    assert client.get("/api/docs/").status_code in (401, 403)
    client.force_login(get_user_model().objects.create_user("buyer"))
    assert client.get("/api/docs/").status_code == 403  # the API's groups only (config/permissions.py)

    reader = get_user_model().objects.create_user("reader")
    reader.groups.add(Group.objects.get(name="support"))
    client.force_login(reader)
    page = client.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "cdn.jsdelivr.net" not in html
    bundle = re.search(r'src="(/static/[^"]*swagger-ui-bundle\.js)"', html)
    assert bundle, html[:2000]
    script = client.get(bundle.group(1))
    assert script.status_code == 200
    assert "javascript" in script["Content-Type"]
