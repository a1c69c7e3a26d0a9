"""Hundreds of hostile requests, by family, against one real gunicorn (2 workers, DEBUG on).

Every error answer is JSON, gunicorn's own refusals included.

Each request asserts its status, its JSON error code and that the stored-row count moved only for a
valid delivery. Requests go over a raw socket, so that framing (chunked, Content-Length, repeated
headers, bytes that are not ASCII) reaches gunicorn exactly as written here.
"""

import base64
import http.client
import json
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from providers import scheme_get
from providers.base import MAX_SIGNATURE_ENTRIES
from tests.support.processes import process_env, web_start
from tests.webhooks.hostile.bodies import HOSTILE_BODIES, STANDARD_ACCEPTS, valid_event
from webhooks.endpoints import webhook_endpoint_create
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LIMIT = 1024 * 1024  # WEBHOOK_MAX_BODY_BYTES default
STRIPE_SECRET = "whsec_" + secrets.token_hex(16)
STANDARD_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
_PRIVATE = Ed25519PrivateKey.generate()
ED_PRIVATE = "whsk_" + base64.b64encode(_PRIVATE.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
ED_PUBLIC = "whpk_" + base64.b64encode(_PRIVATE.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
SERVER = "server"  # expected code for refusals gunicorn makes itself (before the app): status only


@pytest.fixture(scope="module")
def web(test_database_url, broker_url, tmp_path_factory):
    env = process_env(test_database_url, broker_url, DJANGO_DEBUG="true")
    process, url = web_start(env, tmp_path_factory.mktemp("hostile") / "web.log", workers=2)
    yield int(url.rsplit(":", 1)[1])
    process.stop()


@pytest.fixture
def endpoints(transactional_db):
    webhook_endpoint_create(slug="stripe", scheme="stripe", secret=STRIPE_SECRET)
    webhook_endpoint_create(slug="acme", scheme="standard", secret=STANDARD_SECRET)
    webhook_endpoint_create(slug="edkey", scheme="standard", secret=ED_PUBLIC)


# --- Requests ----------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    status: int
    code: str | tuple[str, ...] | None  # the JSON "error"; None for a 2xx; SERVER for gunicorn's own answers
    stored: int = 0  # how many rows this request adds
    method: str = "POST"
    path: str = "/webhooks/stripe/"
    headers: list[tuple[str, bytes | str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes | None = None  # the whole request, written as is
    half_close: bool = False  # shut our side after writing (a body shorter than declared)


def _request_bytes(case: Case, port: int) -> bytes:
    if case.raw is not None:
        return case.raw
    lines = [f"{case.method} {case.path} HTTP/1.1".encode(), f"Host: 127.0.0.1:{port}".encode(), b"Connection: close"]
    names = {name.lower() for name, _ in case.headers}
    if "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(case.body)}".encode())
    if "content-type" not in names:
        lines.append(b"Content-Type: application/json")
    for name, value in case.headers:
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")))
    return b"\r\n".join(lines) + b"\r\n\r\n" + case.body


def _send(port: int, case: Case) -> tuple[int, str, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(_request_bytes(case, port))
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading everything: its answer is still there to read
        response = http.client.HTTPResponse(sock, method=case.method)
        response.begin()
        return response.status, response.getheader("Content-Type", ""), response.read()


def _check(port: int, case: Case) -> str | None:
    before = WebhookEvent.objects.count()
    status, content_type, content = _send(port, case)
    stored = WebhookEvent.objects.count() - before
    problems = []
    if status != case.status:
        problems.append(f"status {status} != {case.status}")
    if case.method != "HEAD" and status >= 400:
        # gunicorn's own refusals are JSON too (config/gunicorn_worker.py); their code is not checked.
        if not content_type.startswith("application/json"):
            problems.append(f"not JSON: {content_type} {content[:120]!r}")
        elif case.code != SERVER:
            error = json.loads(content).get("error")
            expected = case.code if isinstance(case.code, tuple) else (case.code,)
            if error not in expected:
                problems.append(f"error {error!r} not in {expected}")
    if stored != case.stored:
        problems.append(f"stored {stored} != {case.stored}")
    return f"{case.name}: {'; '.join(problems)}" if problems else None


def _run(port: int, cases: list[Case]) -> None:
    failures = [problem for case in cases if (problem := _check(port, case))]
    assert not failures, f"{len(failures)} of {len(cases)} hostile requests misanswered:\n" + "\n".join(failures)


def _sign(scheme: str, body: bytes, *, event_id: str = "", secret: str | None = None, timestamp: int | None = None) -> dict:
    secret = secret or (STRIPE_SECRET if scheme == "stripe" else STANDARD_SECRET)
    return scheme_get(scheme).sign(secret=secret, body=body, timestamp=timestamp or int(time.time()), event_id=event_id)


def _event_body() -> bytes:
    return json.dumps(valid_event()).encode()


def _stripe(name, status, code, *, header: str | bytes, body: bytes | None = None, stored=0) -> Case:
    return Case(name, status, code, stored, headers=[("Stripe-Signature", header)], body=body or _event_body())


def _standard(name, status, code, *, stored=0, body: bytes | None = None, **override) -> Case:
    body = body or _event_body()
    msg_id = f"msg_{secrets.token_hex(8)}"
    headers = {**_sign("standard", body, event_id=msg_id), **override}
    return Case(name, status, code, stored, path="/webhooks/acme/", headers=list(headers.items()), body=body)


# --- Families ----------------------------------------------------------------------------------------


def header_cases() -> list[Case]:
    now = int(time.time())
    v1 = "ab" * 32
    cases = []
    for digits in (13, 20, 100, 1000, 4300, 4301, 10_000):
        cases.append(_stripe(f"stripe t of {digits} digits", 400, "malformed_signature", header=f"t={'1' * digits},v1={v1}"))
        cases.append(_standard(f"standard timestamp of {digits} digits", 400, "malformed_signature", **{"webhook-timestamp": "1" * digits}))
    for label, value in {"superscripts": "²³".encode("latin-1"), "arabic-indic": "١٧٦٧٢٢٥٦٠٠".encode(), "fullwidth": "１７６７".encode()}.items():
        cases.append(_stripe(f"stripe t of {label} digits", 400, "malformed_signature", header=b"t=" + value + b",v1=" + v1.encode()))
        cases.append(_standard(f"standard timestamp of {label} digits", 400, "malformed_signature", **{"webhook-timestamp": value}))
    for count in (MAX_SIGNATURE_ENTRIES * 2, 100, 1000, 4000):
        cases.append(_stripe(f"stripe {count} short entries", 400, "malformed_signature", header=f"t={now}," + ",".join(["v1=00"] * count)))
        cases.append(_standard(f"standard {count} short entries", 400, "malformed_signature", **{"webhook-signature": " ".join(["v1,AA"] * count)}))
    for count in (MAX_SIGNATURE_ENTRIES + 1, 200, 400):
        full = ",".join(f"v1={secrets.token_hex(32)}" for _ in range(count))
        cases.append(_stripe(f"stripe {count} full-size entries", 400, "malformed_signature", header=f"t={now},{full}"))
        entries = " ".join("v1," + base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(count))
        cases.append(_standard(f"standard {count} full-size entries", 400, "malformed_signature", **{"webhook-signature": entries}))
    # A valid signature among the most junk entries allowed still verifies.
    body = _event_body()
    good = _sign("stripe", body, timestamp=now)["Stripe-Signature"].split(",")[1]
    junk = ",".join(["v1=", "v1=zz", f"v1={'00' * 33}"] + [f"v1={secrets.token_hex(32)}" for _ in range(MAX_SIGNATURE_ENTRIES - 1)])
    cases.append(_stripe("stripe valid entry among junk", 200, None, header=f"t={now},{junk},{good}", body=body, stored=1))
    body = _event_body()
    signed = _sign("standard", body, event_id="msg_junk")
    junk = " ".join(["v1,", "v1a,", "v1,AAAA", "v2," + "A" * 44] + ["v1," + base64.b64encode(secrets.token_bytes(32)).decode()] * 5)
    cases.append(Case("standard valid entry among junk", 200, None, 1, path="/webhooks/acme/", body=body,
                      headers=list({**signed, "webhook-signature": f"{junk} {signed['webhook-signature']}"}.items())))
    body = _event_body()
    cases.append(Case("ed25519 valid", 200, None, 1, path="/webhooks/edkey/", body=body,
                      headers=list(_sign("standard", body, event_id="msg_ed", secret=ED_PRIVATE).items())))
    ed_junk = " ".join("v1a," + base64.b64encode(secrets.token_bytes(64)).decode() for _ in range(MAX_SIGNATURE_ENTRIES))
    cases.append(_standard("ed25519 all entries wrong", 400, "invalid_signature", **{"webhook-signature": ed_junk}))
    cases[-1].path = "/webhooks/edkey/"
    # Empty, missing and odd values.
    for name, header in {
        "empty": "", "spaces": "   ", "t only": f"t={now}", "v1 only": f"v1={v1}", "empty v1": f"t={now},v1=",
        "empty t": f"t=,v1={v1}", "two t": f"t={now},t={now},v1={v1}", "no equals": "garbage", "commas": ",,,,",
        "negative t": f"t=-{now},v1={v1}", "t with space": f"t= {now},v1={v1}", "hex t": f"t=0x10,v1={v1}",
        "latin-1 junk": "t=\xe9\xff,v1=\xe9", "semicolons": f"t={now};v1={v1}",
    }.items():
        code = "missing_signature" if not header.strip() else "malformed_signature"
        cases.append(_stripe(f"stripe header {name}", 400, code, header=header))
    for name, override in {
        "empty id": {"webhook-id": ""}, "empty timestamp": {"webhook-timestamp": ""}, "empty signature": {"webhook-signature": ""},
        "id of 256": {"webhook-id": "m" * 256}, "id of 10000": {"webhook-id": "m" * 10_000},
        "only unknown versions": {"webhook-signature": "v2,AAAA v3,BBBB"}, "no comma": {"webhook-signature": "v1AAAA"},
        "timestamp with sign": {"webhook-timestamp": f"+{now}"}, "timestamp fractional": {"webhook-timestamp": f"{now}.5"},
    }.items():
        code = "missing_signature" if "" in override.values() else "malformed_signature"
        cases.append(_standard(f"standard {name}", 400, code, **override))
    body = _event_body()
    cases.append(_stripe("stripe no header at all", 400, "missing_signature", header="", body=body))
    cases[-1].headers = []
    cases.append(_stripe("stripe wrong secret", 400, "invalid_signature", header=_sign("stripe", body, secret="whsec_" + "b" * 32)["Stripe-Signature"], body=body))
    old = now - 3600
    cases.append(_stripe("stripe old timestamp", 400, "timestamp_out_of_tolerance", header=_sign("stripe", body, timestamp=old)["Stripe-Signature"], body=body))
    # Repeated headers: gunicorn joins them with a comma; never a 5xx and never stored.
    body = _event_body()
    sig = _sign("stripe", body)["Stripe-Signature"]
    cases.append(Case("stripe header repeated", 400, ("malformed_signature", "invalid_signature"), body=body,
                      headers=[("Stripe-Signature", sig), ("Stripe-Signature", sig)]))
    body = _event_body()
    signed = _sign("standard", body, event_id="msg_rep")
    for repeated in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headers = list(signed.items()) + [(repeated, signed[repeated])]
        cases.append(Case(f"standard {repeated} repeated", 400, ("malformed_signature", "invalid_signature"),
                          path="/webhooks/acme/", body=body, headers=headers))
    # NUL and control bytes are refused by gunicorn itself (400) before the app runs.
    cases.append(_stripe("stripe header with NUL", 400, SERVER, header=f"t={now},v1=\x00{v1}"))
    cases.append(_standard("standard id with NUL", 400, SERVER, **{"webhook-id": "msg_\x00"}))
    # Past gunicorn's header limits (config/gunicorn.py): its own 431, nothing read.
    cases.append(_stripe("stripe header of 36 KiB", 400, "malformed_signature", header=f"t={now}," + "v1=00," * 6000))
    cases.append(_stripe("stripe header over 64 KiB", 431, SERVER, header=f"t={now}," + "v1=00," * 11000))
    return cases


def body_cases() -> list[Case]:
    cases = []
    for name, body in sorted(HOSTILE_BODIES.items()):
        cases.append(Case(f"stripe body {name}", 400, "invalid_payload", body=body, headers=list(_sign("stripe", body).items())))
        accepted = name in STANDARD_ACCEPTS
        for slug, secret in (("acme", STANDARD_SECRET), ("edkey", ED_PRIVATE)):
            headers = _sign("standard", body, event_id=f"msg_{secrets.token_hex(8)}", secret=secret)
            cases.append(Case(f"{slug} body {name}", 200 if accepted else 400, None if accepted else "invalid_payload",
                              1 if accepted else 0, path=f"/webhooks/{slug}/", body=body, headers=list(headers.items())))
    # Valid deliveries and their redeliveries, between the hostile ones.
    for _ in range(10):
        body = _event_body()
        headers = list(_sign("stripe", body).items())
        cases.append(Case("stripe valid", 200, None, 1, body=body, headers=headers))
        cases.append(Case("stripe redelivery", 200, None, 0, body=body, headers=headers))
    return cases


def _chunked(body: bytes, size: int, *, terminator: bytes = b"0\r\n\r\n") -> bytes:
    return b"".join(f"{len(body[i:i + size]):x}\r\n".encode() + body[i:i + size] + b"\r\n" for i in range(0, len(body), size)) + terminator


def framing_cases() -> list[Case]:
    cases = []
    for size in (1, 7, 100, 4096, 1 << 20):
        body = _event_body()
        cases.append(Case(f"chunked valid, chunks of {size}", 200, None, 1, body=_chunked(body, size),
                          headers=[("Transfer-Encoding", "chunked"), *_sign("stripe", body).items()]))
    body = _event_body()
    cases.append(Case("chunked unslashed path", 200, None, 1, path="/webhooks/stripe", body=_chunked(body, 10),
                      headers=[("Transfer-Encoding", "chunked"), *_sign("stripe", body).items()]))
    for extra in (1, 1000):
        big = b'{"id": "evt_big", "pad": "' + b"x" * (LIMIT - 28 + extra) + b'"}'  # LIMIT + extra bytes
        cases.append(Case(f"chunked {extra} bytes over the limit", 413, "payload_too_large", body=_chunked(big, 65536),
                          headers=[("Transfer-Encoding", "chunked"), *_sign("stripe", big).items()]))
    body = _event_body()
    sig = list(_sign("stripe", body).items())
    # A broken chunked framing is the request's fault: a 400, from gunicorn or from the app.
    for name, framed in {
        "chunk size not hex": b"zz\r\n" + body + b"\r\n0\r\n\r\n",
        "chunk longer than declared": b"5\r\n" + body + b"\r\n0\r\n\r\n",
        "no final chunk": _chunked(body, 10, terminator=b""),
        "negative size": b"-5\r\nabcde\r\n0\r\n\r\n",
    }.items():
        cases.append(Case(f"chunked malformed: {name}", 400, ("malformed_body", SERVER), body=framed, half_close=True,
                          headers=[("Transfer-Encoding", "chunked"), *sig]))
    cases.append(Case("content-length shorter than the body", 400, "invalid_signature", body=body,
                      headers=[("Content-Length", str(len(body) - 5)), *sig]))
    cases.append(Case("content-length longer than the body", 400, "malformed_body", body=body,
                      half_close=True, headers=[("Content-Length", str(len(body) + 50)), *sig]))
    cases.append(Case("content-length over the limit, body not sent", 413, "payload_too_large", body=b"{}",
                      headers=[("Content-Length", str(LIMIT + 1)), *sig]))
    cases.append(Case("content-length of 10^30", 413, "payload_too_large", body=b"{}", headers=[("Content-Length", "1" + "0" * 30), *sig]))
    cases.append(Case("content-length not a number", 400, SERVER, body=body, headers=[("Content-Length", "abc"), *sig]))
    cases.append(Case("content-length and chunked together", 400, SERVER, body=_chunked(body, 10),
                      headers=[("Content-Length", "10"), ("Transfer-Encoding", "chunked"), *sig]))
    exact = b'{"id": "evt_exact_' + secrets.token_hex(4).encode() + b'", "pad": "'
    exact += b"x" * (LIMIT - len(exact) - 2) + b'"}'
    cases.append(Case("body of exactly the limit", 200, None, 1, body=exact, headers=list(_sign("stripe", exact).items())))
    over = exact[:-2] + b'x"}'
    cases.append(Case("body one byte over the limit", 413, "payload_too_large", body=over, headers=list(_sign("stripe", over).items())))
    return cases


def path_method_type_cases() -> list[Case]:
    cases = []
    for path in ("/webhooks/stripe", "/webhooks/%73tripe/", "/webhooks/%73tripe"):
        body = _event_body()
        cases.append(Case(f"path {path}", 200, None, 1, path=path, body=body, headers=list(_sign("stripe", body).items())))
    body = _event_body()
    sig = list(_sign("stripe", body).items())
    for path in ("/webhooks/nobody/", "/webhooks/nobody", "/webhooks/stripe/extra", "/webhooks/", "/webhooks//stripe/",
                 "/webhooks/str%00ipe/", "/webhooks/%2e%2e/", "/webhooks/" + "a" * 2000 + "/", "/webhooks/%C3%A9/",
                 "/webhooks/stripe%2F/", "/webhooks/stripe/?x=" + "y" * 1000 + "/x"):
        code = "unknown_endpoint"
        if path.startswith("/webhooks/stripe/?"):
            cases.append(Case("query string on the real endpoint", 200, None, 1, path=path, body=body, headers=sig))
            continue
        cases.append(Case(f"path {path[:40]}", 404, code, path=path, body=body, headers=sig))
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO", "HEAD"):
        cases.append(Case(f"method {method}", 405, "method_not_allowed", method=method, body=body if method != "HEAD" else b"", headers=sig))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/json; charset=latin-1", "application/octet-stream", ""):
        body = _event_body()
        cases.append(Case(f"content type {content_type or 'empty'}", 200, None, 1, body=body,
                          headers=[("Content-Type", content_type), *_sign("stripe", body).items()]))
    body = _event_body()
    cases.append(Case("bad host", 400, "bad_request", raw=(
        b"POST /webhooks/stripe/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nStripe-Signature: {_sign('stripe', body)['Stripe-Signature']}\r\n\r\n".encode() + body)))
    cases.append(Case("api bad host", 400, "bad_request", method="GET", raw=(
        b"GET /api/v1/events/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")))
    for path in ("/api/v1/events/", "/api/v1/nothing/", "/api/v1/events/?cursor=cD1ub3RhZGF0ZQ=="):
        status, code = (404, "not_found") if "nothing" in path else (401, "not_authenticated")
        cases.append(Case(f"api {path}", status, code, method="GET", path=path))
    return cases


def random_header_cases(count: int = 60) -> list[Case]:
    """Headers assembled at random from the pieces the parsers split on: a 400 with a signature code."""
    rng = random.Random(8)
    pieces = ["t=", "v1=", "v0=", "v1a,", "v1,", ",", " ", "=", str(int(time.time())), "ab" * 32, "00", "²", "\xe9", "9" * 40]
    codes = ("malformed_signature", "missing_signature", "invalid_signature")
    cases = []
    for i in range(count):
        header = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 60)))
        if i % 2:
            cases.append(_stripe(f"random stripe header {header[:40]!r}", 400, codes, header=header))
        else:
            key = rng.choice(["webhook-id", "webhook-timestamp", "webhook-signature"])
            cases.append(_standard(f"random {key} {header[:40]!r}", 400, codes, **{key: header}))
    return cases


# --- The suite ---------------------------------------------------------------------------------------


def test_hostile_signature_headers(web, endpoints):
    _run(web, header_cases())


def test_hostile_signed_bodies(web, endpoints):
    _run(web, body_cases())


def test_hostile_random_headers(web, endpoints):
    _run(web, random_header_cases())


def test_hostile_framing(web, endpoints):
    _run(web, framing_cases())


def test_hostile_paths_methods_content_types(web, endpoints):
    _run(web, path_method_type_cases())


def test_hostile_api_queries_with_a_valid_token(web, endpoints):
    from django.contrib.auth.models import Group, User

    from tests.accounts.factories import token_key_for
    from tests.webhooks.factories import WebhookEventFactory

    WebhookEventFactory.create_batch(3)
    user = User.objects.create_user(username="hostile-staff")
    user.groups.add(*Group.objects.all())
    auth = [("Authorization", f"Token {token_key_for(user)}")]
    cases = [
        Case(f"api {path}", status, code, method=method, path=path, headers=auth, body=body)
        for method, path, status, code, body in [
            ("GET", "/api/v1/events/?cursor=cD1ub3RhZGF0ZQ==", 400, "invalid_cursor", b""),
            ("GET", "/api/v1/audit/?cursor=cD1ub3RhZGF0ZQ==", 400, "invalid_cursor", b""),
            ("GET", "/api/v1/entitlements/?user=9223372036854775808", 400, "invalid", b""),
            ("GET", "/api/v1/notifications/?user=9223372036854775808", 400, "invalid", b""),
            ("GET", "/api/v1/events/00000000-0000-0000-0000-000000000000/", 404, "not_found", b""),
            ("GET", "/api/v1/dead-letters/999999/", 404, "not_found", b""),
            ("PUT", f"/api/v1/users/{user.pk}/notification-preferences/", 400, "parse_error",
             b'{"preferences": ' + b"[" * 1000 + b"]" * 1000 + b"}"),
            ("PUT", f"/api/v1/users/{user.pk}/notification-preferences/", 400, "parse_error", b'{"a": NaN}'),
        ]
    ]
    for field_name in ("since", "until"):
        for value in ("0001-01-01T00:00:00%2B01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00-23:59"):
            for base in ("/api/v1/events/", "/api/v1/dead-letters/", "/api/v1/audit/"):
                cases.append(Case(f"api {base} {field_name}={value}", 200, None, method="GET", path=f"{base}?{field_name}={value}", headers=auth))
    failures = []
    for case in cases:
        if case.code is None:  # 200 with a JSON page, or a 400 with a JSON code: never a 5xx or HTML
            status, content_type, _ = _send(web, case)
            if status >= 500 or not content_type.startswith("application/json"):
                failures.append(f"{case.name}: {status} {content_type}")
        elif problem := _check(web, case):
            failures.append(problem)
    assert not failures, "\n".join(failures)


def test_the_suite_is_a_few_hundred_requests():
    families = (header_cases, random_header_cases, body_cases, framing_cases, path_method_type_cases)
    assert sum(len(family()) for family in families) >= 250


# --- Slow clients ------------------------------------------------------------------------------------


@pytest.fixture
def one_worker(test_database_url, broker_url, tmp_path):
    """A single sync worker: a client that stalls it would stall every delivery."""
    env = process_env(test_database_url, broker_url, GUNICORN_READ_TIMEOUT="2", GUNICORN_REQUEST_READ_SECONDS="3")
    process, url = web_start(env, tmp_path / "web.log", workers=1)
    yield int(url.rsplit(":", 1)[1])
    process.stop()


def _trickle(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    """Send `data` a byte every 0.3 s (a slowloris: every single read comes in time)."""
    for byte in data:
        if stop.wait(0.3):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


_HEAD = b"POST /webhooks/stripe/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.mark.parametrize(
    ("opening", "trickled"),
    [
        (_HEAD + b"Content-Length: 100\r\n\r\n{", b""),  # stops mid-body
        (_HEAD + b"Stripe-Sig", b""),  # stops mid-headers
        (_HEAD, b"X-Slow: " + b"a" * 200),  # trickles its headers
        (_HEAD + b"Content-Length: 100000\r\n\r\n", b"{" * 200),  # trickles its body
    ],
    ids=["stops-mid-body", "stops-mid-headers", "trickles-headers", "trickles-body"],
)
def test_a_slow_client_loses_its_connection_and_deliveries_go_on(one_worker, endpoints, opening, trickled):
    staller, stop = socket.create_connection(("127.0.0.1", one_worker)), threading.Event()
    staller.sendall(opening)
    trickler = threading.Thread(target=_trickle, args=(staller, trickled, stop), daemon=True)
    trickler.start()
    try:
        time.sleep(0.2)  # the worker is now reading from the staller
        started = time.monotonic()
        body = json.dumps(valid_event()).encode()
        connection = http.client.HTTPConnection("127.0.0.1", one_worker, timeout=20)
        connection.request("POST", "/webhooks/stripe/", body, {"Content-Type": "application/json", **_sign("stripe", body)})
        response = connection.getresponse()
        waited = time.monotonic() - started

        assert response.status == 200 and json.loads(response.read())["status"] == "accepted"
        # Served once the staller's deadline (3 s for the whole request) passed, not after gunicorn's
        # 30 s worker timeout, however steadily the staller trickles.
        assert waited < 10, f"the delivery waited {waited:.1f}s behind a slow client"
    finally:
        stop.set()
        staller.close()
        trickler.join(5)
