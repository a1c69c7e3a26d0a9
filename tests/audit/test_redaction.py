import base64
import json
import random
import re
import secrets
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from audit.redaction import ALLOWED_KEYS, audit_data_shape, key_rule, luhn_valid, redact, redact_text
from tests.audit.pii import assert_no_pii

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# How values sit in real text: JSON, logs, tracebacks, CSV. Something non-alphanumeric separates a
# value from its neighbours; a number glued to other digits is not a card or a phone any more.
SEPARATORS = [" ", "\n", "\t", ", ", "; ", "'", '"', "(", ")", "[", "]", "<", ">", "=", "|", ": "]


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


def _grouped(digits: str, separator: str, size: int = 4) -> str:
    return separator.join(digits[i : i + size] for i in range(0, len(digits), size))


digits = lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)  # noqa: E731


@st.composite
def cards(draw):
    length = draw(st.integers(13, 19))
    number = _luhn_complete(draw(st.sampled_from("3456")) + draw(digits(length - 2)))
    return draw(st.sampled_from([number, _grouped(number, " "), _grouped(number, "-")]))


@st.composite
def luhn_invalid_runs(draw):
    """13–19 digits failing Luhn, contiguous or grouped by four. A grouped run is judged by each
    group-aligned stretch of 13–19 digits (a card followed by other numbers is still a card), so
    grouped runs are drawn with every such stretch failing Luhn."""
    length = draw(st.integers(13, 19))
    number = draw(digits(length))
    assume(not luhn_valid(number))
    if draw(st.booleans()):
        return number
    groups = [number[i : i + 4] for i in range(0, length, 4)]
    windows = ("".join(groups[a : b + 1]) for a in range(len(groups)) for b in range(a, len(groups)))
    assume(not any(13 <= len(w) <= 19 and luhn_valid(w) for w in windows))
    return _grouped(number, draw(st.sampled_from([" ", "-"])))


@st.composite
def phones(draw):
    form = draw(st.sampled_from(["e164", "intl", "paren", "nanp", "trunk"]))
    if form in ("e164", "intl"):
        country = draw(st.sampled_from(["1", "44", "49", "33", "353", "61", "81", "998"]))
        national = draw(st.integers(1, 9).map(str)) + draw(digits(draw(st.integers(7, 14 - len(country)))))
        if form == "e164":
            return f"+{country}{national}"
        sep = draw(st.sampled_from([" ", "-", "."]))
        return f"+{country}{sep}" + _grouped(national, sep, draw(st.integers(2, 4)))
    area, exchange, line = draw(digits(3)), draw(digits(3)), draw(digits(4))
    if form == "paren":
        return f"({area}) {exchange}-{line}"
    if form == "nanp":
        sep = draw(st.sampled_from(["-", ".", " "]))
        return sep.join([area, exchange, line])
    trunk = "0" + draw(digits(draw(st.integers(1, 3))))
    sizes = draw(st.sampled_from([[3, 4], [4, 4], [6], [3, 3], [4, 3], [2, 2, 2, 2], [3, 3, 3]]))
    assume(9 <= len(trunk) + sum(sizes) <= 11)
    return " ".join([trunk] + [draw(digits(size)) for size in sizes])


ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).map(str).filter(lambda text: text.strip(":") != "")
tokens = st.one_of(
    st.text(string.ascii_letters + string.digits, min_size=12, max_size=40).map(lambda t: "sk_live_" + t),
    st.text(string.ascii_letters + string.digits, min_size=12, max_size=40).map(lambda t: "rk_test_" + t),
    st.binary(min_size=16, max_size=48).map(lambda b: "whsec_" + base64.b64encode(b).decode()),
    st.text(string.ascii_letters + string.digits + "-._~", min_size=20, max_size=60).map(lambda t: "Bearer 9" + t),
)
needles = st.one_of(st.emails(), cards(), phones(), ipv4s, ipv6s, tokens)

# Keys a provider or a caller might use that are neither allowlisted nor personal-looking.
plain_keys = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(
    lambda key: key_rule(key)[0] == "scan"
)
filler = st.text(max_size=20)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), filler)


def nested(leaf):
    return st.recursive(
        leaf,
        lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(plain_keys, children, max_size=3)),
        max_leaves=8,
    )


def _surround(needle: str, before: str, after: str, left: str, right: str) -> str:
    # A number right after another number, a space apart, reads as one longer number (`0 020
    # 7946 0958`); a phone or card is written next to words or punctuation, so keep the digits
    # of the filler one character away.
    if re.search(r"\d$", before):
        before += "x"
    if re.match(r"\d", after):
        after = "x" + after
    return before + left + needle + right + after


@st.composite
def embedded(draw, needle_strategy):
    """(structure, needle): the needle inside free text, at a random place in a random structure."""
    needle = draw(needle_strategy)
    text = _surround(needle, draw(filler), draw(filler), draw(st.sampled_from(SEPARATORS)), draw(st.sampled_from(SEPARATORS)))
    spot = draw(st.sampled_from(["value", "key", "list"]))
    leaf = {draw(plain_keys): text} if spot == "value" else {text: draw(scalars)} if spot == "key" else [text]
    structure = draw(nested(scalars))
    # Hide the leaf somewhere inside the generated structure.
    holder = {"metadata": {draw(plain_keys): structure, "note": leaf}}
    return draw(st.sampled_from([holder, [holder], {"data": {"object": holder}}])), needle


def _dump(value) -> str:
    return json.dumps(value, ensure_ascii=False)


@SETTINGS
@given(embedded(needles))
def test_personal_values_embedded_anywhere_never_survive(case):
    structure, needle = case
    assert needle not in _dump(redact(structure))


@SETTINGS
@given(needles, filler, filler, st.sampled_from(SEPARATORS), st.sampled_from(SEPARATORS))
def test_personal_values_in_free_text_never_survive(needle, before, after, left, right):
    assert needle not in redact_text(_surround(needle, before, after, left, right))


@SETTINGS
@given(st.emails())
def test_emails_are_tagged_even_under_allowlisted_keys(email):
    out = redact({"id": email, "customer": [email]})
    assert email not in _dump(out)
    assert out["id"].endswith("[email]") and out["customer"][0].endswith("[email]")


ids = st.builds(
    lambda prefix, body: f"{prefix}_{body}",
    st.sampled_from(["evt", "cus", "pi", "ch", "in", "sub", "price", "prod", "cs_test", "re", "dp", "msg"]),
    st.text(string.ascii_letters + string.digits, min_size=8, max_size=60),
)
allowlisted_values = st.one_of(
    st.fixed_dictionaries({"id": ids, "customer": ids, "price_id": ids, "payment_intent": ids}),
    st.fixed_dictionaries({"amount": st.integers(0, 10**12), "amount_refunded": st.integers(0, 10**9), "currency": st.sampled_from(["usd", "eur", "gbp"])}),
    st.fixed_dictionaries({"created": st.integers(10**9, 2 * 10**9), "expires_at": st.datetimes().map(lambda d: d.isoformat() + "Z")}),
    st.fixed_dictionaries({"status": st.sampled_from(["paid", "active", "canceled"]), "entitlements": st.lists(st.sampled_from(["pro", "reports", "seats"]))}),
    st.fixed_dictionaries({"event_id": st.uuids().map(str), "attempts": st.integers(0, 50), "count": st.integers(0, 10**6)}),
)


@SETTINGS
@given(allowlisted_values, nested(scalars), plain_keys)
def test_allowlisted_ids_and_amounts_survive_unchanged(values, noise, key):
    structure = {key: noise, "data": {"object": dict(values)}, "items": [dict(values)]}
    out = redact(structure)
    assert out["data"]["object"] == values
    assert out["items"] == [values]


json_values = st.recursive(
    st.one_of(scalars, needles, st.floats(allow_nan=False, allow_infinity=False)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(plain_keys, st.sampled_from(["email", "name", "id", "amount", "phone"]), filler), children, max_size=4),
    ),
    max_leaves=12,
)


@SETTINGS
@given(json_values)
def test_redaction_is_idempotent(value):
    once = redact(value)
    assert redact(once) == once


@SETTINGS
@given(st.one_of(st.text(), needles.map(lambda n: f"x {n} y")))
def test_text_redaction_is_idempotent(text):
    once = redact_text(text)
    assert redact_text(once) == once


@SETTINGS
@given(luhn_invalid_runs(), st.sampled_from(SEPARATORS))
def test_luhn_invalid_digit_runs_are_left_alone(run, separator):
    text = f"order{separator}{run}{separator}shipped"
    assert redact_text(text) == text


@SETTINGS
@given(cards())
def test_luhn_valid_cards_are_tagged_as_cards(card):
    assert redact_text(f"paid with {card} today") == "paid with [card] today"


# --- Examples: the rules, one at a time -----------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mail Alice.Smith+tag@Example.co.uk.", "mail [email]."),
        ("GET /?to=alice%40example.com", "GET /?to=[email]"),
        ("card 4242 4242 4242 4242 exp 12/34", "card [card] exp 12/34"),
        ("amex 3782-822463-10005", "amex [card]"),
        ("order 4242424242424241 shipped", "order 4242424242424241 shipped"),
        ("call +1 (555) 123-4567 now", "call [phone] now"),
        ("or 020 7946 0958 or 07700 900123", "or [phone] or [phone]"),
        ("from 203.0.113.9 via 2001:db8::8a2e:370:7334", "from [ip] via [ip]"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "Authorization: [token]"),
        ("key sk_live_51HxYzAbCdEfGhIjKlMn and whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "key [token] and [token]"),
        ("postgres://payhook:hunter2@db:5432/payhook", "postgres://[token]@db:5432/payhook"),
        ("password=hunter2 retry", "password=[token] retry"),
        ("secret Zx9_Kq2LmN8pQr4StUv6WxYz1AbCdEf", "secret [token]"),
        ("ship to 221B Baker Street, London NW1 6XE", "ship to [address], London [address]"),
    ],
)
def test_detectors_tag_what_they_find(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "evt_1NG8Du2eZvKYlo2CUI0Oaxzh pi_3MtwBwLkdIwHu7ix28a3tqPa cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
        "event 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "at 2024-01-15T10:30:00.123456+00:00 (1700000000), amount 2000, 12 345 678 items",
        'File "/work/main/.venv/lib/python3.11/site-packages/django/db/backends/utils.py", line 105, in _execute',
        "django.db.utils.IntegrityError: duplicate key value violates unique constraint \"auditentry_unique_dedup_key\"",
        "ImproperlyConfiguredExceptionHandlerForTheWebhookViews in std::vector at 12:30:45, v3.11.4",
        "Invalid token provided",
    ],
)
def test_identifiers_times_and_code_are_left_alone(text):
    assert redact_text(text) == text


def test_keys_decide_before_detectors():
    payload = {
        "id": "evt_1",
        "type": "checkout.session.completed",
        "amount_total": 2000,
        "customer_details": {"email": "a@b.co", "name": "Alice Liddell", "phone": None},
        "billing_details": {"address": {"line1": "1 Main St"}},
        "email": None,
        "receipt_email": "a@b.co",
        "phone": 5551234567,
        "payment_method_details": {"card": {"last4": "4242", "brand": "visa"}},
        "client_ip": "203.0.113.9",
        "metadata": {"user_id": "42", "plan_note": "vip", "nickname": "Al"},
        "livemode": False,
    }
    assert redact(payload) == {
        "id": "evt_1",
        "type": "checkout.session.completed",
        "amount_total": 2000,
        "customer_details": "[personal]",
        "billing_details": "[address]",
        "email": None,
        "receipt_email": "[email]",
        "phone": "[phone]",
        "payment_method_details": "[card]",
        "client_ip": "[ip]",
        "metadata": {"user_id": "42", "plan_note": "vip", "nickname": "[name]"},
        "livemode": False,
    }


def test_values_under_personal_keys_are_scrubbed_where_they_recur():
    payload = {
        "customer_details": {"name": "Alice Liddell", "address": {"line1": "12 Rabbit Hole"}},
        "description": "Gift from alice LIDDELL to Liddell's sister, deliver to 12 Rabbit Hole",
    }
    out = redact(payload)
    assert out["description"] == "Gift from [name] to [name]'s sister, deliver to [address]"


def test_known_values_are_scrubbed_from_text_and_structures():
    assert redact_text("Traceback: no user for Bob Stone", known=["Bob Stone"]) == "Traceback: no user for [personal]"
    assert redact({"note": "for cus_Q1 bob"}, known=["cus_Q1"]) == {"note": "for [personal] bob"}


def test_personal_dict_keys_are_redacted_and_classify_their_value():
    assert redact({"metadata": {"alice@example.com": "vip"}}) == {"metadata": {"[email]": "[email]"}}


def test_output_is_json_safe():
    from datetime import datetime, timezone
    from decimal import Decimal
    from uuid import UUID

    out = redact(
        {
            "when": datetime(2024, 1, 2, tzinfo=timezone.utc),
            "amount": Decimal("12.50"),
            "ref": UUID(int=1),
            "blob": b"\x00\x01",
            "nul": "a\x00b",
            "tags": {"b", "a"},
            "ratio": float("nan"),
        }
    )
    assert json.loads(json.dumps(out, allow_nan=False)) == {
        "when": "2024-01-02T00:00:00+00:00",
        "amount": "12.50",
        "ref": "00000000-0000-0000-0000-000000000001",
        "blob": "[binary]",
        "nul": "a\ufffdb",
        "tags": ["a", "b"],
        "ratio": "nan",
    }


def test_random_high_entropy_secrets_are_tagged():
    rng = random.Random(4)
    for _ in range(300):
        secret = base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=")
        assert redact_text(f"x {secret} y") == "x [token] y"
    assert redact_text(f"x {secrets.token_hex(20)} y").startswith("x ")  # hex digests are kept


def test_allowlist_holds_no_personal_field_names():
    assert not ALLOWED_KEYS & {"email", "name", "phone", "address", "ip", "token", "password", "description", "metadata"}


def test_long_input_is_redacted_quickly():
    import time

    text = ("a" * 5000 + " ") * 20 + "call +1 555 123 4567 now " + "1 " * 5000 + "x@y.io " + "::" * 2000
    started = time.process_time()  # CPU time: what a pathological regex would burn, not a busy machine's wait
    out = redact_text(text)
    assert "[phone]" in out and "[email]" in out
    assert time.process_time() - started < 5.0  # catastrophic backtracking takes minutes, not seconds


# --- Shapes the detectors once missed (issue 9) -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pay to DE89 3704 0044 0532 0130 00 today", "pay to [card] today"),
        ("iban DE89370400440532013000", "iban [card]"),
        ("GB29 NWBK 6016 1331 9268 19", "[card]"),
        ("card 4000.0566.5566.5556 ok", "card [card] ok"),
        ("card 5555  5555  5555  4444 ok", "card [card] ok"),
        ("lives at 12 rue de Rivoli, Paris", "lives at [address], Paris"),
        ("5 calle mayor, Madrid", "[address], Madrid"),
        ("3 high street", "[address]"),
        ("Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "Token [token]"),
        ("key=9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b;", "key=[token];"),
        ('mail "john doe"@example.com now', "mail [email] now"),
    ],
)
def test_detectors_find_the_shapes_they_once_missed(text, expected):
    assert redact_text(text) == expected


# --- Audit data: allow-list per action --------------------------------------------------------------


def test_only_allowed_keys_of_their_kind_are_kept():
    from tests.audit.pii import PII_CARD_NUMBER, PII_SHAPES, pii_note

    data = {
        "entitlement": "pro", "source": "payment:pi_3Mtw", "payment_intent": "pi_3Mtw", "expires_at": "2026-12-01T00:00:00+00:00",
        "reason": None, "canonical_event": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "comment": pii_note(), "metadata": {"note": PII_CARD_NUMBER}, "customer_email": "carol.personal@example.org",
    }
    shaped = audit_data_shape(action="entitlement.granted", data=data)
    assert shaped == {key: data[key] for key in ("entitlement", "source", "payment_intent", "expires_at", "reason", "canonical_event")}
    assert_no_pii([json.dumps(shaped)], PII_SHAPES)


def test_an_operator_note_is_kept_with_every_detectable_shape_scrubbed_and_capped():
    from tests.audit.pii import PII_CARD_NUMBER

    note = f"refund reversed after a call; card {PII_CARD_NUMBER}, mail carol.personal@example.org " + "x" * 1000
    shaped = audit_data_shape(action="dlq.resolved", data={"dead_letter": 7, "task": "webhooks.tasks.x", "note": note})

    assert shaped["note"].startswith("refund reversed after a call; card [card], mail [email] ")
    assert len(shaped["note"]) == 500
    assert audit_data_shape(action="dlq.resolved", data={"note": {"nested": "x"}}) == {"note": "[dropped]"}


@pytest.mark.parametrize(
    "value",
    [
        "carol@example.org", '"john doe"@example.com', "4242424242424242", 4242424242424242, "4242-4242-4242-4242",
        "203.0.113.77", "2001:db8::8a2e:370:7334", "sk_live_51HfakeSecretToken0123456789abcdef",
        "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "DE89 3704 0044 0532 0130 00", "12 rue de Rivoli", "555-123-4567",
        "x" * 256, "", True, 1.5, {"a": 1}, ["pi_1"],
    ],
)
def test_an_id_that_is_not_shaped_like_one_is_dropped(value):
    assert audit_data_shape(action="entitlement.granted", data={"payment_intent": value}) == {"payment_intent": "[dropped]"}


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("attempts", 5, -1), ("attempts", 0, "5"), ("attempts", 3, True),
        ("error_type", "UnknownPrice", "price 42 for carol@example.org"),
        ("task", "webhooks.tasks.webhook_events_process", "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"),
    ],
)
def test_values_are_validated_by_kind(key, good, bad):
    assert audit_data_shape(action="task.dead_lettered", data={key: good}) == {key: good}
    assert audit_data_shape(action="task.dead_lettered", data={key: bad}) == {key: "[dropped]"}


def test_kinds_of_other_actions():
    shaped = audit_data_shape(action="endpoint.secret_added", data={
        "endpoint_id": 3, "slug": "stripe", "key_fingerprint": "0123456789abcdef", "kind": "stripe", "source": "command",
        "others_expire_at": "2026-12-02T00:00:00+00:00", "expiring_key_fingerprints": ["fedcba9876543210", "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"],
    })
    assert shaped["expiring_key_fingerprints"] == ["fedcba9876543210", "[dropped]"]
    assert shaped["endpoint_id"] == 3 and shaped["key_fingerprint"] == "0123456789abcdef"
    changed = audit_data_shape(action="preferences.changed", data={
        "changes": [{"category": "billing", "channel": "email", "enabled": False, "by": "carol@example.org"},
                    {"category": "billing", "channel": "sms", "enabled": "no"}], "source": "api",
    })
    assert changed == {"changes": [{"category": "billing", "channel": "email", "enabled": False},
                                   {"category": "billing", "channel": "[dropped]", "enabled": "[dropped]"}], "source": "api"}
    assert audit_data_shape(action="event.reprocessed", data={"previous_status": "processed", "via": "admin"}) == {
        "previous_status": "processed", "via": "admin"}
    assert audit_data_shape(action="event.reprocessed", data={"previous_status": "lost"}) == {"previous_status": "[dropped]"}


def test_an_action_without_an_allow_list_keeps_only_a_marker():
    assert audit_data_shape(action="no.such.action", data={"entitlement": "pro", "note": "carol@example.org"}) == {
        "[dropped]": "no allow-list for this action"}


def _emitted_actions() -> dict[str, set[str]]:
    """Every audit action the application code names, with the data keys written beside it.

    Parsed from the source (ast): calls `audit_entry_append(action="…", data={…})`, dicts
    `{"action": "…", "data": {…}}`, and any other string literal shaped like an audit action.
    """
    import ast
    from pathlib import Path

    from audit.models import AuditAction

    root = Path(__file__).resolve().parents[2]
    emitted: dict[str, set[str]] = {}
    prefixes = {value.split(".")[0] for value in AuditAction.values}

    def keys_of(node) -> set[str]:
        if isinstance(node, ast.Dict):
            return {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        return set()

    for path in root.glob("*/**/*.py"):
        if path.parts[len(root.parts)] in ("tests", ".venv", "bench") or "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"[a-z]+\.[a-z_]+", node.value) and node.value.split(".")[0] in prefixes and node.value.split(".")[1] in {
                    v.split(".")[1] for v in AuditAction.values
                }:
                    emitted.setdefault(node.value, set())
            if isinstance(node, ast.Call):
                kwargs = {kw.arg: kw.value for kw in node.keywords}
                action = kwargs.get("action")
                if isinstance(action, ast.Constant) and "data" in kwargs:
                    emitted.setdefault(action.value, set()).update(keys_of(kwargs["data"]))
            if isinstance(node, ast.Dict):
                pairs = {k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)}
                if isinstance(pairs.get("action"), ast.Constant) and "data" in pairs:
                    emitted.setdefault(pairs["action"].value, set()).update(keys_of(pairs["data"]))
    return emitted


def test_every_action_the_code_emits_has_an_allow_list_with_its_keys():
    from audit.actions import ALLOWED_DATA
    from audit.models import AuditAction

    emitted = _emitted_actions()
    assert {"webhook.received", "entitlement.granted", "task.dead_lettered", "dlq.replayed", "event.reprocessed"} <= set(emitted)
    assert set(AuditAction.values) == set(ALLOWED_DATA)
    for action, keys in emitted.items():
        assert action in ALLOWED_DATA, f"{action} has no allow-list in audit/actions.py"
        assert keys <= set(ALLOWED_DATA[action]), f"{action} writes {sorted(keys - set(ALLOWED_DATA[action]))}, not on its allow-list"


def test_a_label_is_a_few_lower_case_code_words():
    good = {"source": "command webhook_endpoint add-secret"}
    assert audit_data_shape(action="endpoint.secret_added", data=good) == good
    for bad in ("Carolina Smith", "mail carol@example.org", "a b c d e f g", "call 555-123-4567", ""):
        assert audit_data_shape(action="endpoint.secret_added", data={"source": bad}) == {"source": "[dropped]"}


def test_a_card_stored_as_a_json_number_under_a_scanned_key_is_tagged():
    assert redact({"note": 4242424242424242, "order": 1790000000123, "amount": 2000}) == {
        "note": "[card]", "order": 1790000000123, "amount": 2000}
