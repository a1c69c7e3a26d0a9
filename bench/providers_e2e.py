#!/usr/bin/env python3
"""End-to-end check of every payment provider against a running payhook, from outside.

For each of stripe (the reference), paddle, lemonsqueezy, adyen and paypal it drives the service
only through HTTP, as the provider and an API client would:

  1. a payment for --user-id, built from the provider's own sample (`providers.scheme_get(name).sample`)
     with the buyer's user id where CONTRACT.md's "buyer" table says and a payment reference unique
     to this run, signed with the endpoint's secret (`scheme.signed_request`), POSTed  -> 200 accepted
     (Adyen: `[accepted]`);
  2. the identical request again                                                    -> 200 duplicate
     (Adyen: `[accepted]` again; the events API then shows one stored event);
  3. the same request with one body byte changed (inside a signed field)           -> 400 invalid_signature;
  4. `GET /api/v1/entitlements/?user=ID&include_inactive=true` until the catalog's entitlement ("pro"),
     granted by that payment (its `source` names the reference), is active (timeout 60 s);
  5. the provider's full refund of that same payment, POSTed, then polling until that entitlement is
     revoked (and absent from the default, active-only, list).

Every request is printed as a one-line command summary, followed by the answer. Secrets and the
API token are printed masked (a prefix and the length), never in full.

Set-up, in order (the docs and the transcript in the lead's report show each command):

  # 1. Before `make run`: secrets of each provider's shape, the catalog, and PayPal's throwaway PKI.
  .venv/bin/python bench/providers_e2e.py --init --state-dir var/e2e --paypal-pki-dir var/e2e/paypal-pki \
      --paypal-cert-port 18443 --write-env .env
  #    --write-env sets these in .env (PayPal's certificate must come over https from an allow-listed
  #    host and chain to the configured CA bundle; see providers/paypal/certificates.py):
  #      PAYPAL_CERT_URL_HOSTS=localhost:18443
  #      PAYPAL_CERT_CA_BUNDLE=<pki dir>/ca.pem
  #      PAYPAL_CERT_SUBJECT_NAMES=messageverificationcerts.paypal.com
  #      PAYPAL_TEST_SIGNING_KEY=<pki dir>/signing.key          (for send_test_webhook only)
  #      PAYPAL_TEST_CERT_URL=https://localhost:18443/cert.pem  (for send_test_webhook only)
  #    The CA signs two leaves: `server.pem` (localhost: the https server's own TLS certificate) and
  #    `signing.pem` (messageverificationcerts.paypal.com: the key PayPal deliveries are signed with).
  #    The CA's private key is not kept.
  # 2. make run PORT=8131  (reads .env)
  # 3. In another terminal (each secret is read from its file on standard input):
  .venv/bin/python manage.py import_catalog var/e2e/catalog.json
  .venv/bin/python manage.py webhook_endpoint create e2e-paddle --scheme paddle --secret - < var/e2e/secret-paddle.txt
  #    ... likewise e2e-stripe, e2e-lemonsqueezy, e2e-adyen, e2e-paypal
  #    a buyer user, and an API user in the `operators` group with a token (manage.py drf_create_token USER)
  # 4. .venv/bin/python bench/providers_e2e.py --base-url http://127.0.0.1:8131 --token TOKEN --user-id ID \
  #        --state-dir var/e2e --paypal-pki-dir var/e2e/paypal-pki
  #    It serves the PayPal signing certificate (leaf + CA) at https://localhost:<port>/cert.pem while it runs.
  #    `--serve-paypal-cert` only serves it (e.g. for `manage.py send_test_webhook e2e-paypal CHECKOUT.ORDER.COMPLETED`).

Uses the standard library, `cryptography` (already a dependency, for PayPal's PKI) and the project's
provider packages; no Django settings beyond the two PayPal signing ones are configured.
Exit status: 0 when every step of every provider passed.
"""

import argparse
import datetime as dt
import http.server as http_server
import json
import os
import secrets
import ssl
import string
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROVIDERS = ("stripe", "paddle", "lemonsqueezy", "adyen", "paypal")
ENTITLEMENT = "pro"
PAYPAL_NAME = "messageverificationcerts.paypal.com"
POLL_TIMEOUT = 60.0

# --- output ---------------------------------------------------------------------------------------


def say(line: str = "") -> None:
    print(line, flush=True)


def mask(value: str) -> str:
    return f"{value[:6]}…({len(value)} chars)" if len(value) > 8 else "…"


def short(body: bytes, limit: int = 400) -> str:
    text = body.decode("utf-8", "replace").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def headers_summary(headers: dict) -> str:
    shown = []
    for name, value in headers.items():
        if name.lower() == "content-type":
            continue
        if name.upper() == "PAYPAL-CERT-URL" or name.upper() in ("PAYPAL-AUTH-ALGO", "PAYPAL-TRANSMISSION-TIME"):
            shown.append(f"{name}: {value}")
        else:
            shown.append(f"{name}: {value[:24]}…" if len(value) > 24 else f"{name}: {value}")
    return "; ".join(shown) if shown else "no signature header (signed inside the body)"


# --- HTTP -----------------------------------------------------------------------------------------

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, *, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _opener.open(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError as exc:
        return 0, f"connection failed: {exc.reason}".encode()


class Api:
    def __init__(self, base_url: str, token: str):
        self.base = base_url.rstrip("/")
        self.token = token

    def get(self, path: str, params: dict, *, quiet: bool = False) -> tuple[int, dict | None, bytes]:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        if not quiet:
            say(f"$ curl -H 'Authorization: Token {mask(self.token)}' '{url}'")
        status, raw = http("GET", url, headers={"Authorization": f"Token {self.token}", "Accept": "application/json"})
        try:
            return status, json.loads(raw), raw
        except ValueError:
            return status, None, raw

    def rows(self, path: str, params: dict, *, quiet: bool = False) -> tuple[int, list[dict], bytes]:
        """Every row of a cursor-paginated list (page_size 500)."""
        status, data, raw = self.get(path, {**params, "page_size": 500}, quiet=quiet)
        if status != 200 or not isinstance(data, dict):
            return status, [], raw
        rows = list(data.get("results", []))
        following = data.get("next")
        while following:
            status, raw = http("GET", following, headers={"Authorization": f"Token {self.token}"})
            if status != 200:
                break
            page = json.loads(raw)
            rows.extend(page.get("results", []))
            following = page.get("next")
        return status, rows, raw


# --- PayPal's throwaway PKI and its https certificate host ----------------------------------------


def pki_create(directory: Path) -> None:
    """ca.pem, server.pem/.key (localhost) and signing.pem/.key (PayPal's verification name), as
    tests/providers/paypal/conftest.py builds them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(common_name):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder().subject_name(name("payhook e2e throwaway root")).issuer_name(name("payhook e2e throwaway root"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(dns_name):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder().subject_name(name(dns_name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return key, cert

    def pem(cert):
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    directory.mkdir(parents=True, exist_ok=True)
    server_key, server_cert = leaf("localhost")
    signing_key, signing_cert = leaf(PAYPAL_NAME)
    files = {"ca.pem": pem(ca), "server.pem": pem(server_cert), "signing.pem": pem(signing_cert)}
    for file_name, data in files.items():
        (directory / file_name).write_bytes(data)
    for file_name, key in (("server.key", server_key), ("signing.key", signing_key)):
        private_write(directory / file_name, key_pem(key))


def private_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def cert_server_start(directory: Path, port: int) -> http_server.ThreadingHTTPServer:
    """https://localhost:<port>/cert.pem: the signing leaf, then its CA (as PayPal serves leaf + chain)."""
    served = (directory / "signing.pem").read_bytes() + (directory / "ca.pem").read_bytes()

    class Handler(http_server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/cert.pem":
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-pem-file")
            self.send_header("Content-Length", str(len(served)))
            self.end_headers()
            self.wfile.write(served)
            say(f"  [cert host] served /cert.pem to {self.client_address[0]}")

        def log_message(self, *args):
            pass

    class Quiet(http_server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.pem", directory / "server.key")
    server = Quiet(("127.0.0.1", port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def paypal_signing_configure(directory: Path, port: int) -> None:
    """PayPal's sign() reads two Django settings: the leaf's key and where its certificate is."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(PAYPAL_TEST_SIGNING_KEY=str(directory / "signing.key"),
                           PAYPAL_TEST_CERT_URL=f"https://localhost:{port}/cert.pem")


# --- secrets, catalog, .env (--init) ---------------------------------------------------------------


def secret_new(provider: str) -> str:
    alnum = string.ascii_uppercase + string.digits
    if provider == "stripe":
        return "whsec_" + secrets.token_urlsafe(24)
    if provider == "paddle":
        return "pdl_ntfset_01" + "".join(secrets.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(24)) + "_" + secrets.token_urlsafe(24)
    if provider == "lemonsqueezy":
        return secrets.token_urlsafe(24)[:32]
    if provider == "adyen":
        return secrets.token_hex(32).upper()
    if provider == "paypal":
        return "".join(secrets.choice(alnum) for _ in range(17))
    raise KeyError(provider)


def catalog() -> dict:
    from providers.adyen.samples import SAMPLE_PRICE_ID as ADYEN_PRICE
    from providers.lemonsqueezy.samples import SAMPLE_VARIANT_ID
    from providers.paddle.samples import SAMPLE_PRICE_ID as PADDLE_PRICE
    from providers.paypal.samples import SAMPLE_SKU
    from providers.stripe.samples import SAMPLE_PRICE_ID as STRIPE_PRICE

    prices = {"stripe": STRIPE_PRICE, "paddle": PADDLE_PRICE, "lemonsqueezy": SAMPLE_VARIANT_ID, "adyen": ADYEN_PRICE, "paypal": SAMPLE_SKU}
    return {"products": [{"provider": p, "price_id": prices[p], "entitlements": [ENTITLEMENT]} for p in PROVIDERS]}


def env_lines(pki_dir: Path, port: int) -> dict[str, str]:
    return {
        "PAYPAL_CERT_URL_HOSTS": f"localhost:{port}",
        "PAYPAL_CERT_CA_BUNDLE": str(pki_dir / "ca.pem"),
        "PAYPAL_CERT_SUBJECT_NAMES": PAYPAL_NAME,
        "PAYPAL_TEST_SIGNING_KEY": str(pki_dir / "signing.key"),
        "PAYPAL_TEST_CERT_URL": f"https://localhost:{port}/cert.pem",
    }


def env_write(path: Path, values: dict[str, str]) -> None:
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in values]
    kept += [f"{key}={value}" for key, value in values.items()]
    path.write_text("\n".join(kept) + "\n")


def init(args) -> int:
    from providers import scheme_get

    state = Path(args.state_dir).resolve()
    pki_dir = Path(args.paypal_pki_dir).resolve()
    pki_create(pki_dir)
    say(f"wrote PayPal's throwaway PKI to {pki_dir}: ca.pem, server.pem/.key (localhost), signing.pem/.key ({PAYPAL_NAME})")
    endpoints = {}
    for provider in PROVIDERS:
        secret = secret_new(provider)
        scheme_get(provider).secret_parse(secret)  # refused here rather than by webhook_endpoint create
        slug = f"{args.slug_prefix}{provider}"
        private_write(state / f"secret-{provider}.txt", secret.encode() + b"\n")
        endpoints[provider] = {"slug": slug, "secret_file": str(state / f"secret-{provider}.txt")}
        say(f"{provider}: endpoint {slug}, secret {mask(secret)} in {state / f'secret-{provider}.txt'} (mode 0600)")
    (state / "endpoints.json").write_text(json.dumps(endpoints, indent=2) + "\n")
    (state / "catalog.json").write_text(json.dumps(catalog(), indent=2) + "\n")
    say(f"wrote {state / 'endpoints.json'} and {state / 'catalog.json'} (entitlement {ENTITLEMENT!r} for each provider's sample price)")
    values = env_lines(pki_dir, args.paypal_cert_port)
    if args.write_env:
        env_write(Path(args.write_env), values)
        say(f"set in {args.write_env} (before `make run`):")
    else:
        say("put in .env before `make run`:")
    for key, value in values.items():
        say(f"  {key}={value}")
    return 0


# --- events per provider ----------------------------------------------------------------------------


def _alnum(n: int) -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(n))


class Case:
    """One provider's payment and refund, built on its samples."""

    def __init__(self, provider: str, user_id: int, run: str):
        from providers import scheme_get

        self.provider, self.user_id, self.run = provider, user_id, run
        self.scheme = scheme_get(provider)
        self.payment_type = ""
        self.refund_type = ""
        self.reference = ""  # the payment reference a refund revokes by; the entitlement's source names it
        self.match = ""  # a string each stored event row of this payment holds (idempotency key)

    def sample(self, event_type: str) -> dict:
        body, _ = self.scheme.sample(event_type, mode="live")
        return json.loads(body)

    # Each builder returns the payload (a dict); the payment sets reference/match.
    def payment(self) -> dict:
        return getattr(self, f"_{self.provider}_payment")()

    def refund(self) -> dict:
        return getattr(self, f"_{self.provider}_refund")()

    def _stripe_payment(self):
        self.payment_type = "checkout.session.completed"
        event = self.sample(self.payment_type)
        session = event["data"]["object"]
        self.reference = f"pi_e2e{self.run}{secrets.token_hex(6)}"
        self.customer = f"cus_e2e{self.run}{secrets.token_hex(4)}"
        session.update(id=f"cs_e2e_{secrets.token_hex(12)}", payment_intent=self.reference,
                       client_reference_id=str(self.user_id), customer=self.customer)
        self.match = event["id"]
        return event

    def _stripe_refund(self):
        self.refund_type = "charge.refunded"
        event = self.sample(self.refund_type)
        charge = event["data"]["object"]
        charge.update(id=f"ch_e2e{secrets.token_hex(10)}", payment_intent=self.reference, customer=self.customer,
                      refunded=True, amount_refunded=charge.get("amount") or 100)
        return event

    def _paddle_payment(self):
        from providers.paddle.samples import paddle_id

        self.payment_type = "transaction.completed"
        event = self.sample(self.payment_type)
        self.reference = paddle_id("txn_")
        self.customer = paddle_id("ctm_")
        event["data"].update(id=self.reference, subscription_id=None, customer_id=self.customer,
                             custom_data={"user_id": str(self.user_id)})
        self.match = event["event_id"]
        return event

    def _paddle_refund(self):
        from providers.paddle.samples import paddle_id

        self.refund_type = "adjustment.updated"  # action refund, status approved, type full
        event = self.sample(self.refund_type)
        event["data"].update(id=paddle_id("adj_"), transaction_id=self.reference, subscription_id=None,
                             customer_id=self.customer)
        assert event["data"]["action"] == "refund" and event["data"]["status"] == "approved" and event["data"]["type"] == "full"
        return event

    def _lemonsqueezy_payment(self):
        self.payment_type = "order_created"
        event = self.sample(self.payment_type)
        self.order_id = event["data"]["id"]  # fresh per sample
        self.customer = secrets.randbelow(10**8) + 10**7
        event["meta"]["custom_data"] = {"user_id": str(self.user_id)}
        event["data"]["attributes"]["customer_id"] = self.customer
        self.reference = f"order:{self.order_id}"
        self.match = f"order_created:orders:{self.order_id}:"
        return event

    def _lemonsqueezy_refund(self):
        self.refund_type = "order_refunded"
        event = self.sample(self.refund_type)  # status refunded, refunded_amount = total, updated_at now
        event["data"]["id"] = self.order_id
        event["data"]["attributes"]["first_order_item"]["order_id"] = int(self.order_id)
        event["data"]["attributes"]["customer_id"] = self.customer
        event["meta"]["custom_data"] = {"user_id": str(self.user_id)}
        return event

    def _adyen_payment(self):
        self.payment_type = "AUTHORISATION"
        event = self.sample(self.payment_type)
        item = event["notificationItems"][0]["NotificationRequestItem"]
        item["additionalData"]["shopperReference"] = str(self.user_id)
        item["merchantReference"] = f"e2e-{self.run}-{item['pspReference']}"
        self.reference = item["pspReference"]  # fresh per sample
        self.match = f"AUTHORISATION:{self.reference}:true"
        return event

    def _adyen_refund(self):
        self.refund_type = "REFUND"
        event = self.sample(self.refund_type)
        item = event["notificationItems"][0]["NotificationRequestItem"]
        item["originalReference"] = self.reference
        item["additionalData"]["shopperReference"] = str(self.user_id)
        item["merchantReference"] = f"e2e-{self.run}-refund-{self.reference}"
        return event

    def _paypal_payment(self):
        self.payment_type = "CHECKOUT.ORDER.COMPLETED"
        event = self.sample(self.payment_type)
        resource = event["resource"]
        self.reference = _alnum(17)  # the capture id
        resource["id"] = _alnum(17)
        resource["custom_id"] = str(self.user_id)
        resource["payer"]["payer_id"] = _alnum(13)
        resource["purchase_units"][0]["payments"]["captures"][0]["id"] = self.reference
        self.match = event["id"]
        return event

    def _paypal_refund(self):
        self.refund_type = "PAYMENT.CAPTURE.REFUNDED"
        event = self.sample(self.refund_type)
        resource = event["resource"]
        refund_id = _alnum(17)
        resource["id"] = refund_id
        resource["custom_id"] = str(self.user_id)
        for link in resource["links"]:
            if link["rel"] == "up":
                link["href"] = f"https://api.paypal.com/v2/payments/captures/{self.reference}"
            elif link["rel"] == "self":
                link["href"] = f"https://api.paypal.com/v2/payments/refunds/{refund_id}"
        return event


def tamper(body: bytes, reference: str) -> tuple[bytes, str]:
    """One byte changed: the last character of the payment reference (a signed field for every
    scheme, Adyen's pspReference included), so the JSON stays valid and only the signature can refuse it."""
    needle = reference.split(":")[-1].encode()
    at = body.index(needle) + len(needle) - 1
    old = body[at:at + 1]
    alphabet = b"0123456789" if old.isdigit() else b"ABCDEFGHJKMNPQRSTVWXYZ" if old.isupper() else b"abcdefghjkmnpqrstvwxyz"
    new = next(bytes([c]) for c in alphabet if bytes([c]) != old)
    return body[:at] + new + body[at + 1:], f"byte {at}: {old.decode()!r} -> {new.decode()!r}"


# --- the run ----------------------------------------------------------------------------------------


class Run:
    def __init__(self, args):
        self.args = args
        self.api = Api(args.base_url, args.token)
        self.state = Path(args.state_dir).resolve()
        self.endpoints = json.loads((self.state / "endpoints.json").read_text())
        self.run_id = secrets.token_hex(3)
        self.started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
        self.results: dict[str, dict[str, str]] = {}

    def secret(self, provider: str) -> str:
        return Path(self.endpoints[provider]["secret_file"]).read_text().strip()

    def post(self, case: Case, slug: str, what: str, event_type: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        url = f"{self.api.base}/webhooks/{slug}/"
        say(f"$ POST {url}  [{what}] {case.provider} {event_type} ref={case.reference} ({len(body)} bytes; {headers_summary(headers)})")
        status, answer = http("POST", url, body=body, headers={"Content-Type": "application/json", **headers})
        say(f"  -> {status} {short(answer)}")
        return status, answer

    def check(self, provider: str, step: str, ok: bool, detail: str) -> bool:
        self.results.setdefault(provider, {})[step] = ("PASS " if ok else "FAIL ") + detail
        say(f"  {'ok' if ok else 'FAILED'}: {step}: {detail}")
        return ok

    def entitlement_row(self, case: Case, quiet: bool) -> tuple[int, dict | None, int]:
        status, rows, raw = self.api.rows("/api/v1/entitlements/", {"user": self.args.user_id, "include_inactive": "true"}, quiet=quiet)
        mine = [r for r in rows if r.get("key") == ENTITLEMENT and case.reference.split(":")[-1] in (r.get("source") or "")]
        return status, (mine[0] if mine else None), len(rows)

    def poll(self, case: Case, want: str) -> dict | None:
        deadline = time.monotonic() + POLL_TIMEOUT
        first, polls = True, 0
        while True:
            status, row, count = self.entitlement_row(case, quiet=not first)
            polls += 1
            if first and status != 200:
                say(f"  -> {status} (the API refused: check the token and its group)")
                return None
            first = False
            if row is not None and row.get("status") == want:
                say(f"  -> 200 after {polls} poll(s): {count} row(s) for user {self.args.user_id}; this payment's: {json.dumps(row)}")
                return row
            if time.monotonic() > deadline:
                say(f"  -> timed out after {POLL_TIMEOUT:.0f} s ({polls} polls); this payment's row: {json.dumps(row)}")
                return None
            time.sleep(0.5)

    def stored_events(self, case: Case, slug: str, event_type: str) -> list[dict]:
        since = self.started.strftime("%Y-%m-%dT%H:%M:%SZ")
        status, rows, raw = self.api.rows("/api/v1/events/", {"endpoint": slug, "type": event_type, "since": since})
        mine = [r for r in rows if case.match in (r.get("idempotency_key") or "")]
        say(f"  -> {status} {len(rows)} {event_type} event(s) on {slug} since {since}; for this payment ({case.match}): {len(mine)}: "
            + json.dumps([{k: r.get(k) for k in ('id', 'idempotency_key', 'status')} for r in mine]))
        return mine

    def provider(self, provider: str) -> None:
        slug = self.endpoints[provider]["slug"]
        secret = self.secret(provider)
        case = Case(provider, self.args.user_id, self.run_id)
        adyen = provider == "adyen"
        say("")
        say(f"=== {provider} (endpoint {slug}, secret {mask(secret)}) ===")

        payload = case.payment()
        raw = json.dumps(payload).encode()
        body, headers = case.scheme.signed_request(secret=secret, body=raw, timestamp=int(time.time()), event_id=case.match)

        # 1. accepted
        status, answer = self.post(case, slug, "payment", case.payment_type, body, headers)
        if adyen:
            self.check(provider, "1 accepted", status == 200 and answer == b"[accepted]", f"{status} {short(answer, 80)}")
        else:
            ok = status == 200 and json.loads(answer or b"{}").get("status") == "accepted" if status == 200 else False
            self.check(provider, "1 accepted", ok, f"{status} {short(answer, 120)}")

        # 2. duplicate: the identical request
        status, answer = self.post(case, slug, "same request again", case.payment_type, body, headers)
        if adyen:
            rows = self.stored_events(case, slug, case.payment_type)
            self.check(provider, "2 duplicate", status == 200 and answer == b"[accepted]" and len(rows) == 1,
                       f"{status} {short(answer, 80)}; {len(rows)} stored event(s) for {case.match}")
        else:
            ok = status == 200 and json.loads(answer).get("status") == "duplicate" if status == 200 else False
            self.check(provider, "2 duplicate", ok, f"{status} {short(answer, 120)}")

        # 3. one byte changed
        tampered, change = tamper(body, case.reference)
        status, answer = self.post(case, slug, f"one body byte changed, {change}, same headers", case.payment_type, tampered, headers)
        self.check(provider, "3 tampered", status == 400 and b"invalid_signature" in answer, f"{status} {short(answer, 80)}")

        # 4. entitlement granted
        row = self.poll(case, "active")
        self.check(provider, "4 granted", row is not None,
                   f"{ENTITLEMENT} active, source {row['source']}" if row else f"{ENTITLEMENT} not active within {POLL_TIMEOUT:.0f} s")

        # 5. full refund -> revoked
        refund = json.dumps(case.refund()).encode()
        body, headers = case.scheme.signed_request(secret=secret, body=refund, timestamp=int(time.time()), event_id="")
        status, answer = self.post(case, slug, "full refund", case.refund_type, body, headers)
        accepted = status == 200 and (answer == b"[accepted]" if adyen else json.loads(answer).get("status") == "accepted")
        row = self.poll(case, "revoked") if accepted else None
        if row is not None:
            status, active, raw = self.api.rows("/api/v1/entitlements/", {"user": self.args.user_id})
            still = [r for r in active if r.get("key") == ENTITLEMENT and r.get("source") == row["source"]]
            say(f"  -> {status} active-only list: {len(active)} row(s); this payment's {ENTITLEMENT} {'STILL listed' if still else 'not listed'}")
            ok = not still
        else:
            ok = False
        self.check(provider, "5 refund revoked", ok,
                   f"refund {status} {short(answer, 60)}; " + (f"{ENTITLEMENT} {row['status']} ({row['revoke_reason']})" if row else "not revoked"))

    def main(self) -> int:
        say(f"payhook providers end to end: {self.api.base}, user {self.args.user_id}, run {self.run_id}, token {mask(self.args.token)}")
        server = None
        if "paypal" in self.args.providers:
            pki_dir = Path(self.args.paypal_pki_dir).resolve()
            paypal_signing_configure(pki_dir, self.args.paypal_cert_port)
            server = cert_server_start(pki_dir, self.args.paypal_cert_port)
            say(f"serving PayPal's signing certificate at https://localhost:{self.args.paypal_cert_port}/cert.pem")
        try:
            for provider in self.args.providers:
                try:
                    self.provider(provider)
                except Exception as exc:  # noqa: BLE001 - one provider's failure must not hide the others'
                    self.check(provider, "run", False, f"{type(exc).__name__}: {exc}")
        finally:
            if server is not None:
                server.shutdown()
        say("")
        say("=== summary ===")
        failed = 0
        for provider in self.args.providers:
            for step, result in self.results.get(provider, {}).items():
                failed += result.startswith("FAIL")
                say(f"{provider:13} {step:17} {result}")
        say(f"{'ALL PASSED' if not failed else f'{failed} step(s) FAILED'}")
        return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", help="an API token of a user in operators or support (or a superuser)")
    parser.add_argument("--user-id", type=int, help="the buyer: a payhook user id")
    parser.add_argument("--state-dir", default=str(ROOT / "var" / "e2e"), help="endpoints.json, secret files, catalog.json")
    parser.add_argument("--paypal-pki-dir", default=str(ROOT / "var" / "e2e" / "paypal-pki"))
    parser.add_argument("--paypal-cert-port", type=int, default=18443)
    parser.add_argument("--providers", default=",".join(PROVIDERS), help="comma-separated subset")
    parser.add_argument("--slug-prefix", default="e2e-")
    parser.add_argument("--init", action="store_true", help="write secrets, catalog and PayPal's PKI (before make run)")
    parser.add_argument("--write-env", metavar="PATH", help="with --init: set the PayPal variables in this .env")
    parser.add_argument("--serve-paypal-cert", action="store_true", help="only serve PayPal's certificate until interrupted")
    args = parser.parse_args(argv)
    args.providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    if args.init:
        return init(args)
    if args.serve_paypal_cert:
        cert_server_start(Path(args.paypal_pki_dir).resolve(), args.paypal_cert_port)
        say(f"serving https://localhost:{args.paypal_cert_port}/cert.pem until interrupted")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    if not args.token or not args.user_id:
        parser.error("--token and --user-id are required (or --init / --serve-paypal-cert)")
    return Run(args).main()


if __name__ == "__main__":
    sys.exit(main())
