"""Issue 12 acceptance (logs): the Procfile's web, worker and beat processes, fed personal data through
the pipeline (a fulfilled checkout that sends an e-mail, a refused delivery, a dead-lettered one),
write nothing but JSON objects, one a line, with the context keys where they apply, and 0 personal
values."""

import json
import signal

import pytest
import requests
from django.contrib.auth import get_user_model

from fulfillment.services import catalog_import
from notifications.models import Notification
from tests.audit import pii
from tests.conftest import signed_headers
from tests.fulfillment import stripe_events as se
from tests.fulfillment.conftest import CATALOG
from tests.support.processes import Process, procfile_commands, procfile_web_start, wait_for
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GUEST_EMAIL = "dave.guest@example.net"
NEEDLES = [*pii.PII_SHAPES, GUEST_EMAIL]


def _checkout(user_id: int, *, session_id: str, price_id: str, created: int) -> dict:
    event = se.checkout_completed(session_id=session_id, created=created, price_id=price_id, user_id=user_id,
                                  customer=f"cus_{session_id}", payment_intent=f"pi_{session_id}", email=pii.PII_EMAIL)
    session = event["data"]["object"]
    session["customer_details"].update(
        name=pii.PII_NAME, phone=pii.PII_PHONE,
        address={"line1": pii.PII_STREET, "city": "Springfield", "country": "US", "line2": None, "postal_code": "49007", "state": "OR"},
    )
    session["metadata"].update(note=pii.pii_note(), ip=pii.PII_IP, ipv6=pii.PII_IPV6, iban=pii.PII_IBAN, api_key=pii.PII_SECRET)
    session["description"] = pii.pii_note()
    return event


def _post(base: str, event: dict, secret: str) -> requests.Response:
    body = json.dumps(event).encode()
    headers = {
        "Content-Type": "application/json", **signed_headers("stripe", secret, body),
        # Header values are never logged, a forwarded client address included.
        "X-Forwarded-For": pii.PII_IP, "User-Agent": f"shop/1.0 ({pii.PII_EMAIL})",
    }
    return requests.post(f"{base}/webhooks/stripe/", data=body, headers=headers, timeout=10)


def _objects(name: str, text: str) -> list[dict]:
    objects = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"{name} line {number} is not JSON: {line[:200]!r}") from None
        assert isinstance(obj, dict), f"{name} line {number} is not an object: {line[:200]!r}"
        assert {"timestamp", "level", "logger", "event"} <= set(obj), f"{name} line {number}: {line[:200]!r}"
        objects.append(obj)
    return objects


def test_every_line_of_web_worker_and_beat_is_json_with_context_and_no_personal_data(
    stripe_endpoint, stripe_secret, worker_env, broker_flushed, tmp_path
):
    catalog_import(data=CATALOG)
    user = get_user_model().objects.create_user("carol", email=pii.PII_EMAIL)
    mail_dir = tmp_path / "mail"
    (tmp_path / "var").mkdir()
    env = {
        **worker_env, "LOG_FORMAT": "json", "CELERY_QUIET": "1", "CELERY_CONCURRENCY": "1",
        # The most talkative levels: every library's debug lines, Celery's own included, go through the formatter too.
        "DJANGO_LOG_LEVEL": "DEBUG", "CELERY_LOG_LEVEL": "DEBUG", "CELERY_INTERNAL_LOG_LEVEL": "DEBUG",
        "EMAIL_BACKEND": "config.mail.FileEmailBackend", "EMAIL_FILE_PATH": str(mail_dir),
        "PAYHOOK_VAR_DIR": str(tmp_path / "var"), "WEBHOOK_SWEEP_INTERVAL_SECONDS": "1",  # beat's schedule file; a busy beat
    }
    commands = procfile_commands()
    worker = Process.shell(commands["worker"], env, tmp_path / "worker.log", name="worker")
    beat = Process.shell(commands["beat"], env, tmp_path / "beat.log", name="beat")
    web = None
    try:
        worker.worker_ready_wait()
        web, port = procfile_web_start(env, tmp_path / "web.log", workers=1)
        base = f"http://127.0.0.1:{port}"

        paid = _post(base, _checkout(user.id, session_id="cs_logs", price_id="price_pro", created=1_790_000_000), stripe_secret)
        poisoned = _post(base, _checkout(user.id, session_id="cs_bad", price_id=f"price_for_{pii.PII_EMAIL}",
                                         created=1_790_000_001), stripe_secret)
        guest = _checkout(user.id, session_id="cs_forged", price_id="price_pro", created=1_790_000_002)
        guest["data"]["object"]["customer_details"]["email"] = GUEST_EMAIL
        refused = _post(base, guest, "whsec_not_this_endpoints_secret_0123456789")
        assert (paid.status_code, poisoned.status_code, refused.status_code) == (200, 200, 400)
        assert refused.json() == {"error": "invalid_signature"}

        wait_for(lambda: set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed", "dead"},
                 timeout=60, message="one event processed, one dead-lettered")
        wait_for(lambda: Notification.objects.filter(status="sent").exists(), timeout=30, message="the receipt sent")
        wait_for(lambda: "Sending due task" in beat.log(), timeout=30, message="beat sending")
    finally:
        if web is not None:
            web.stop(signal.SIGTERM)
        beat.stop(signal.SIGTERM)
        worker.stop(signal.SIGTERM)  # warm shutdown: its notice is a JSON line too

    web_lines, worker_lines, beat_lines = _objects("web", web.log()), _objects("worker", worker.log()), _objects("beat", beat.log())

    # 0 personal values in any line of any process, as written and as decoded (escapes undone).
    raw = [web.log(), worker.log(), beat.log()]
    decoded = [json.dumps(o, ensure_ascii=False) for o in web_lines + worker_lines + beat_lines]
    pii.assert_no_pii(raw + decoded, [*NEEDLES, stripe_secret, stripe_secret.removeprefix("whsec_")])
    assert any(o["logger"] == "celery.beat" for o in beat_lines)
    # gunicorn's own lines and Celery's own lines went through the same formatter.
    assert any(o["logger"] == "gunicorn.error" and o["event"].startswith("Booting worker") for o in web_lines)
    assert any(o["logger"] == "celery.apps.worker" and o["event"].endswith(" ready.") for o in worker_lines)
    assert any(o["event"] == "worker shutting down" and o["how"] == "Warm" for o in worker_lines)
    # The refusal is logged with its endpoint, by the web process.
    (refusal,) = [o for o in web_lines if o["event"].startswith("webhook refused")]
    assert refusal["endpoint"] == "stripe" and refusal["level"] == "warning"
    # The worker's lines about an event carry its id, the correlation id, the task and the attempt.
    paid_id = str(WebhookEvent.objects.get(status="processed").id)
    dead_id = str(WebhookEvent.objects.get(status="dead").id)
    (processed,) = [o for o in worker_lines if o["event"] == "event processed"]
    assert (processed["event_id"], processed["correlation_id"]) == (paid_id, paid_id)
    assert processed["task"] == "webhooks.tasks.webhook_events_process" and processed["attempt"] == 1
    assert processed["endpoint"] == "stripe"
    dead = [o for o in worker_lines if o["event"] == "event dead-lettered"]
    assert dead and dead[0]["event_id"] == dead_id == dead[0]["correlation_id"] and dead[0]["error"]
    assert dead[0]["endpoint"] == "stripe" and dead[0]["attempt"] == dead[0]["attempts"] == 1
    # The receipt went to a file; the line names the file and the event, never the recipient.
    (written,) = [o for o in worker_lines if o["event"] == "mail written to a file"]
    assert written["event_id"] == paid_id and (mail_dir / written["file"]).is_file()
    assert pii.PII_EMAIL in (mail_dir / written["file"]).read_text()
