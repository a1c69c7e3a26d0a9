"""Redaction of personal data and secrets: the audit log's allow-list and the detectors.

What an audit entry keeps is decided by `audit_data_shape` (bottom of this module) from the
allow-list per action in `audit/actions.py`: listed keys of their kind, nothing else. The detectors
below are the second net for free text that is kept elsewhere (our own errors' messages in dead
letters and Sentry, dedup keys) and for `redact`, which scrubs a structure whose keys are unknown.

The rules are data (the sets and tables below); the functions only apply them.

`redact(data)` walks any JSON-like structure and decides per value by its key:

1. Key in ALLOWED_KEYS (ids, amounts, currency, status, types, entitlement keys, timestamps,
   counts): scalars and lists of scalars are kept. Only the precise detectors (emails and secrets
   with a known shape) still run on such strings, so a provider id is never eaten by the looser
   ones (a Stripe id looks like a token; an order number may pass Luhn).
2. Key in SENSITIVE_KEYS, or containing a PERSONAL_KEY_PARTS fragment (`email`, `phone`, `name`,
   `address`, `password`, `token`, …): the whole value — string, number, list or object — becomes
   its type tag (`"[email]"`, `"[name]"`, …). `null` stays `null`: absence is not personal.
3. Any other key: strings are scanned by the detectors below and every match becomes its tag;
   numbers, booleans and null are kept; lists and objects are walked with the same rules.
   Dict keys are scanned too, and a key is classified after its own redaction.

Values found under sensitive keys are also scrubbed wherever else they recur in the same
structure ("echoes": a buyer's name copied into a description), since names and street addresses
in free text cannot be recognised on their own.

`redact_text(text)` applies the detectors to free text (tracebacks, messages). It and `redact` are
idempotent: redacting twice gives the same result as once.

What the detectors find in free text: emails (also `%40`-encoded), card numbers of 13–19 digits,
optionally grouped by single spaces or dashes, that pass the Luhn check (other digit runs — order
ids, timestamps — are left alone), IPv4 and IPv6 addresses, phone numbers written as phone numbers
(`+` and 8–15 digits, or national forms such as `(555) 123-4567`, `555-123-4567`,
`020 7946 0958`; a bare run of digits is indistinguishable from an amount, an order id or a
timestamp, so it is only tagged under a phone-like key), secrets (`sk_live_…`, `whsec_…`, `Bearer …`, JWTs,
`password=…`, credentials in URLs, and long high-entropy strings that are not provider ids),
street addresses and UK postcodes of common shapes.
"""

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from audit.actions import ALLOWED_DATA

# --- Rules ----------------------------------------------------------------------------------------

ALLOWED_KEYS = frozenset(
    {
        # identifiers
        "id", "object", "event", "event_id", "event_type", "provider_event_id", "idempotency_key",
        "idempotencykey", "correlation_id", "correlationid", "request", "request_id", "customer",
        "customer_id", "user", "user_id", "subscription", "subscription_id", "invoice", "invoice_id",
        "charge", "charge_id", "payment_intent", "payment_intent_id", "checkout_session",
        "session_id", "dispute", "dispute_id", "refund", "refund_id", "price", "price_id",
        "price_ids", "product", "product_id", "plan", "endpoint", "endpoint_id", "slug",
        "notification_id", "dead_letter_id", "task", "task_id", "task_name", "entitlement",
        "entitlements", "entitlement_key", "entitlement_keys", "entitlement_id",
        "source", "specversion", "dataschema", "datacontenttype", "api_version", "fingerprint_id",
        # amounts and money
        "amount", "amount_total", "amount_subtotal", "amount_paid", "amount_due", "amount_refunded",
        "amount_captured", "amount_remaining", "total", "subtotal", "currency", "quantity",
        # states and kinds
        "type", "status", "payment_status", "mode", "livemode", "paid", "refunded", "captured",
        "disputed", "cancel_at_period_end", "action", "channel",
        "category", "template", "scheme", "billing_reason", "collection_method", "interval",
        "interval_count", "error_code", "code", "exception_type", "error_class", "kind",
        "suppressed", "sent", "enabled", "state", "from_status", "to_status",
        # times and counts
        "created", "created_at", "updated_at", "occurred_at", "received_at", "processed_at",
        "time", "timestamp", "expires_at", "starts_at", "ends_at", "period_start", "period_end",
        "current_period_start", "current_period_end", "canceled_at", "cancel_at", "ended_at",
        "trial_start", "trial_end", "start_date", "attempts", "attempt", "count", "attempt_count",
        "retries", "version",
        # endpoint secret changes: keyed-hash names of secrets, never the secrets
        "key_fingerprint", "expiring_key_fingerprints", "others_expire_at",
    }
)

# Exact key → tag. Checked after ALLOWED_KEYS, before the fragments below.
SENSITIVE_KEYS = {
    "email": "email", "receipt_email": "email", "customer_email": "email", "billing_email": "email",
    "name": "name", "first_name": "name", "last_name": "name", "full_name": "name",
    "customer_name": "name", "cardholder": "name", "cardholder_name": "name", "username": "name",
    "given_name": "name", "family_name": "name", "display_name": "name",
    "phone": "phone", "phone_number": "phone", "mobile": "phone", "tel": "phone", "fax": "phone",
    "address": "address", "line1": "address", "line2": "address", "postal_code": "address",
    "zip": "address", "zip_code": "address", "postcode": "address", "city": "address",
    "country": "address", "shipping": "address", "shipping_details": "address",
    "billing_details": "address", "customer_details": "personal", "customer_address": "address",
    "customer_phone": "phone", "customer_shipping": "address", "owner": "personal",
    "tax_id": "personal", "tax_ids": "personal", "ssn": "personal", "dob": "personal",
    "birth_date": "personal", "date_of_birth": "personal",
    "number": "card", "card_number": "card", "pan": "card", "card": "card", "last4": "card",
    "exp_month": "card", "exp_year": "card", "cvc": "card", "cvv": "card", "fingerprint": "card",
    "iban": "card", "account_number": "card", "routing_number": "card",
    "payment_method_details": "card",
    "ip": "ip", "ip_address": "ip", "client_ip": "ip", "remote_addr": "ip", "remote_ip": "ip",
    "x_forwarded_for": "ip", "user_agent": "personal",
    "token": "token", "secret": "token", "client_secret": "token", "password": "token",
    "passwd": "token", "authorization": "token", "api_key": "token", "apikey": "token",
    "cookie": "token", "cookies": "token", "session": "token", "signature": "token",
    "stripe_signature": "token", "webhook_signature": "token", "private_key": "token",
}

# A key containing one of these fragments is personal wholesale (checked after the exact tables).
PERSONAL_KEY_PARTS = (
    ("email", "email"), ("e_mail", "email"), ("phone", "phone"), ("mobile", "phone"),
    ("name", "name"), ("address", "address"), ("street", "address"), ("postal", "address"),
    ("shipping", "address"), ("billing_details", "address"), ("password", "token"),
    ("secret", "token"), ("token", "token"), ("authoriz", "token"), ("credential", "token"),
    ("api_key", "token"), ("cookie", "token"), ("card_number", "card"), ("iban", "card"),
    ("ip_addr", "ip"), ("birth", "personal"),
)

TAGS = ("email", "name", "phone", "address", "card", "ip", "token", "personal")

# Prefixes of provider object ids (Stripe, Standard Webhooks/Svix): such strings are identifiers,
# not secrets, even though they look random. Unknown prefixes are treated as possible secrets.
ID_PREFIXES = frozenset(
    {
        "acct", "ba", "bpc", "btok", "card", "cbtxn", "ch", "cn", "cs", "cus", "cpmt", "du", "dp",
        "ep", "evt", "fee", "file", "fr", "ii", "il", "in", "inv", "ipi", "li", "msg", "pi", "pm",
        "po", "price", "prod", "promo", "py", "pyr", "qt", "re", "req", "seti", "sess", "si",
        "sli", "src", "sub", "sub_sched", "tax", "tmr", "tok", "tr", "trr", "txn", "txi", "whpk",
        "app", "attempt", "int", "evt_test", "ch_test",
    }
)

MAX_DEPTH = 32

# --- Detectors ------------------------------------------------------------------------------------

# The lookbehinds make each scan start only at the beginning of a run: linear on long input.
_EMAIL = re.compile(r"(?<![\w!#$%&'*+/=?^`{|}~.\-])[\w!#$%&'*+/=?^`{|}~.\-]+(?:@|%40)(?:[\w\-]+\.)+[\w\-]{2,}")


def _email_sub(text: str) -> str:
    def replace(match: re.Match) -> str:
        # `/ ? =` are legal in a local part but also end a URL's path or query key: keep what
        # precedes the last of them (`/?to=`), unless nothing would be left of the local part.
        value = match.group()
        local = re.split(r"@|%40", value, maxsplit=1)[0]
        cut = max(local.rfind("/"), local.rfind("?"), local.rfind("="))
        if 0 <= cut < len(local) - 1:
            return value[: cut + 1] + _tag("email")
        return _tag("email")

    return _EMAIL.sub(replace, text)
_SECRET_PATTERNS = (
    re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{6,}"),
    re.compile(r"\bwh(?:sec|sk)_[A-Za-z0-9+/=_\-]{6,}"),
    re.compile(r"\b(?:Bearer|Token|Basic)\s+(?=[A-Za-z0-9._~+/=\-]*\d)[A-Za-z0-9._~+/=\-]{12,}", re.IGNORECASE),
    re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
)
# `password=hunter2`, `"api_key": "…"` in free text: keep the name, tag the value.
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b((?:password|passwd|pwd|secret|client_secret|api[_\-]?key|access[_\-]?token|"
    r"refresh[_\-]?token|auth[_\-]?token|token|authorization)[\"']?\s*[:=]\s*[\"']?)"
    r"(?!\[)([^\s\"',;&}]+)"
)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@\[\]]+:[^/\s@\[\]]+(?=@)")
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_\-]{24,}={0,2}")
_ID_SHAPE = re.compile(r"^([a-z]+(?:_sched)?)_(?:(?:test|live)_)?[A-Za-z0-9]+$")
_IPV6_RUN = re.compile(r"(?<![0-9A-Fa-f:.])[0-9A-Fa-f.]*+(?::[0-9A-Fa-f.]*+){2,}+")
_IPV4 = re.compile(r"(?<!\d)(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d)")
# A run of digit groups as cards and phones are written: `+`, `(555)`, single separators.
_NUMBER_RUN = re.compile(r"\+?\(?\d+(?:(?:\)[ .\-]?|[ .\-])\(?\d+)*\)?")
_UUID = re.compile(r"(?<![0-9A-Fa-f\-])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f\-])")
_STREET = re.compile(
    r"\b\d{1,5}[A-Za-z]?\s+(?:[A-Z][\w'.\-]*\s+){1,4}"
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|"
    r"Terrace|Way|Square|Sq|Parkway|Pkwy|Highway|Hwy|Close|Crescent|Strasse|Straße)\b\.?"
)
# Lower-case and non-English street forms (`12 rue de Rivoli`, `5 calle mayor`, `3 high street`).
_STREET_ANY_CASE = re.compile(
    r"(?i)\b\d{1,5}[a-z]?,?\s+(?:(?:rue|avenue|av\.?|boulevard|bd|chemin|allée|allee|impasse|quai|place|"
    r"route|calle|carrer|avenida|rua|via|viale|piazza|corso|strada|platz|gasse|weg|straat|laan|plein|ulica|"
    r"ul\.)\s+[\w'’.\-]+(?:\s+[\w'’.\-]+){0,3}|(?:[\w'’.\-]+\s+){1,4}(?:street|st|avenue|ave|road|rd|"
    r"boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|terrace|way|square|sq|close|crescent|"
    r"stra(?:ss|ß)e|str\.|gasse|weg|platz|allee))\b\.?"
)
# International bank account numbers: country, check digits, 11–30 alphanumerics, grouped or not.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{2,4}){3,8}\b", re.IGNORECASE)
# Cards written with dots, double spaces or mixed separators (`4242.4242.4242.4242`).
_CARD_LOOSE = re.compile(r"(?<![\d.])\d(?:[ .\-]{0,2}\d){12,18}(?![\d])")
# Emails whose local part is quoted (`"john doe"@example.com`).
_EMAIL_QUOTED = re.compile(r"\"[^\"\n]{1,64}\"(?:@|%40)(?:[\w\-]+\.)+[\w\-]{2,}")
# Lower-case hex runs of token length (a DRF key is 40 hex); 64 hex is a SHA-256 digest, which
# names content rather than unlocking anything, and UUIDs are kept apart by the lookarounds.
_HEX_TOKEN = re.compile(r"(?<![0-9a-fA-F\-])[0-9a-f]{32,48}(?![0-9a-fA-F\-])")
_UK_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b")
_TAG_RE = re.compile(r"\[(?:%s)\]" % "|".join(TAGS))


def _tag(kind: str) -> str:
    return f"[{kind}]"


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _id_shaped(piece: str) -> bool:
    shape = _ID_SHAPE.match(piece)
    return bool(shape) and shape.group(1) in ID_PREFIXES


def _looks_like_secret(run: str) -> bool:
    # Provider ids inside a path or a base64-ish run are not evidence of a secret; judge the rest.
    run = "".join(piece for piece in re.split(r"[/+]", run.rstrip("=")) if not _id_shaped(piece))
    if len(run) < 24:
        return False
    has_digit = any(c.isdigit() for c in run)
    has_upper = any(c.isupper() for c in run)
    has_lower = any(c.islower() for c in run)
    entropy = _entropy(run)
    if has_digit and has_upper and has_lower and entropy >= 3.5:
        return True
    # Long mixed-case words (CamelCase names in a traceback) have no digits or punctuation.
    return len(run) >= 40 and entropy >= 4.3 and bool(re.search(r"[\d_+/\-]", run))


def _high_entropy_sub(text: str) -> str:
    return _LONG_RUN.sub(lambda m: _tag("token") if _looks_like_secret(m.group()) else m.group(), text)


def _ipv6_sub(text: str) -> str:
    def replace(match: re.Match) -> str:
        run = match.group()
        if len(run) > 100:
            return run
        # A run glued to a word (`std::vector`) may not use that side as part of an address.
        glued_left = match.start() > 0 and (text[match.start() - 1].isalnum() or text[match.start() - 1] == "_")
        glued_right = match.end() < len(text) and (text[match.end()].isalnum() or text[match.end()] == "_")
        parts = run.split(":")
        # Try group-aligned windows, longest first: text around an address may share its alphabet.
        for size in range(len(parts), 2, -1):
            for start in range(0, len(parts) - size + 1):
                candidate = ":".join(parts[start : start + size]).rstrip(".")
                if candidate.count(":") < 2 or candidate.strip(":") == "":
                    continue
                if (glued_left and start == 0) or (glued_right and start + size == len(parts)):
                    continue
                try:
                    ipaddress.IPv6Address(candidate)
                except ValueError:
                    continue
                prefix = ":".join(parts[:start]) + (":" if start else "")
                suffix = (":" if start + size < len(parts) else "") + ":".join(parts[start + size :])
                return prefix + _tag("ip") + suffix
        return run

    return _IPV6_RUN.sub(replace, text)


def _phone_ok(groups: list[str], *, plus: bool, paren: bool, trunk: bool = True) -> bool:
    """Whether digit groups, as written, form a phone number rather than an id, amount or date.

    International (`+` then 8–15 digits) in any grouping; national only in common shapes:
    `(area) …`, North American 3-3-4 (optionally after a 1), or a trunk `0` prefix with 9–11
    digits (`020 7946 0958`, `07700 900123`, `01 23 45 67 89`).
    """
    sizes = [len(group) for group in groups]
    digits = sum(sizes)
    if plus:
        return 8 <= digits <= 15
    if len(groups) < 2:
        return False
    if paren:
        return 7 <= digits <= 11 and min(sizes[1:]) >= 2 and sizes[-1] >= 3
    if sizes == [3, 3, 4] or (sizes == [1, 3, 3, 4] and groups[0] == "1"):
        return True
    return trunk and groups[0].startswith("0") and 2 <= sizes[0] <= 5 and 9 <= digits <= 11 and min(sizes[1:]) >= 2


def _card_windows(run: str, groups: list[re.Match]):
    """Group-aligned windows (start, end) of digit groups joined by single spaces or dashes,
    holding 13–19 digits. Windows never split a group: a contiguous run of digits is judged
    whole, so a long order id is never searched for a card inside it."""
    for index in range(len(groups)):
        digits = ""
        for end in range(index, len(groups)):
            if end > index and run[groups[end - 1].end() : groups[end].start()] not in (" ", "-"):
                break
            digits += groups[end].group()
            if len(digits) > 19:
                break
            if len(digits) >= 13:
                yield index, end, digits


def _card_spans(run: str, groups: list[re.Match]) -> list[tuple[int, int]]:
    """Leftmost-longest windows that pass Luhn: a card stays a card when other numbers follow it
    (`4242 4242 4242 4242 12 34`)."""
    best: dict[int, int] = {}
    for index, end, digits in _card_windows(run, groups):
        if luhn_valid(digits):
            best[index] = max(end, best.get(index, end))
    spans, cursor = [], 0
    for index in sorted(best):
        if index >= cursor:
            spans.append((groups[index].start(), groups[best[index]].end()))
            cursor = best[index] + 1
    return spans


def _phone_spans(run: str, segment: list[re.Match]) -> list[tuple[int, int]]:
    """Leftmost-longest group-aligned windows of a stretch of digit groups that are phones."""
    spans, index = [], 0
    while index < len(segment):
        first = segment[index]
        before = run[: first.start()]
        plus = before.endswith("+") or before.endswith("+(")
        paren = before.endswith("(") and run[first.end() : first.end() + 1] == ")"
        found = None
        for end in range(min(len(segment), index + 8) - 1, index - 1, -1):
            # The loose trunk-`0` shape only where a stretch of digits begins, not inside one.
            if _phone_ok([g.group() for g in segment[index : end + 1]], plus=plus, paren=paren, trunk=index == 0):
                found = end
                break
        if found is None:
            index += 1
            continue
        begin = first.start() - (2 if before.endswith("+(") else 1 if (plus or paren) else 0)
        finish = segment[found].end() + (1 if (paren and found == index) else 0)
        spans.append((begin, finish))
        index = found + 1
    return spans


def _number_run_sub(text: str) -> str:
    def replace(match: re.Match) -> str:
        run = match.group()
        groups = list(re.finditer(r"\d+", run))
        spans = [(begin, end, "card") for begin, end in _card_spans(run, groups)]
        # Phones: each stretch of groups between cards, taken whole (or from a leading `+`).
        segments, current, card_iter = [], [], iter(spans)
        card = next(card_iter, None)
        for group in groups:
            while card and group.start() >= card[1]:
                card = next(card_iter, None)
            if card and card[0] <= group.start() < card[1]:
                if current:
                    segments.append(current)
                current = []
                continue
            current.append(group)
        if current:
            segments.append(current)
        for segment in segments:
            spans.extend((begin, end, "phone") for begin, end in _phone_spans(run, segment))
        if not spans:
            return run
        out, cursor = [], 0
        for begin, end, kind in sorted(spans):
            if begin < cursor:
                continue
            out.append(run[cursor:begin])
            out.append(_tag(kind))
            cursor = end
        out.append(run[cursor:])
        return "".join(out)

    return _NUMBER_RUN.sub(replace, text)


def _outside(pattern: re.Pattern, text: str, step) -> str:
    """Apply `step` to the text between matches of `pattern` (UUIDs hold digit groups too)."""
    out, cursor = [], 0
    for match in pattern.finditer(text):
        out.append(step(text[cursor : match.start()]))
        out.append(match.group())
        cursor = match.end()
    out.append(step(text[cursor:]))
    return "".join(out)


def _precise_pass(text: str) -> str:
    """Detectors that never mistake an identifier for personal data: used on allowlisted values."""
    text = _email_sub(text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_tag("token"), text)
    return text


def _iban_sub(text: str) -> str:
    def valid(candidate: str) -> bool:
        compact = re.sub(r"[ \-]", "", candidate).upper()
        # Valid when the rearranged number is 1 mod 97 (ISO 13616); other runs are left alone.
        if not 15 <= len(compact) <= 34:
            return False
        return int("".join(str(int(char, 36)) for char in compact[4:] + compact[:4])) % 97 == 1

    def replace(match: re.Match) -> str:
        run = match.group()
        # The run may have swallowed a following word (`… 0130 00 ok`): try it shorter, by groups.
        cuts = [len(run)] + [m.start() for m in re.finditer(r"[ \-]", run)][::-1]
        for cut in cuts:
            if valid(run[:cut]):
                return _tag("card") + run[cut:]
        return run

    return _IBAN.sub(replace, text)


def _card_loose_sub(text: str) -> str:
    def replace(match: re.Match) -> str:
        digits = re.sub(r"\D", "", match.group())
        return _tag("card") if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()

    return _CARD_LOOSE.sub(replace, text)


def _full_pass(text: str) -> str:
    text = _URL_CREDENTIALS.sub(_tag("token"), text)
    text = _EMAIL_QUOTED.sub(_tag("email"), text)
    text = _email_sub(text)
    text = _HEX_TOKEN.sub(_tag("token"), text)
    text = _iban_sub(text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_tag("token"), text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + _tag("token"), text)
    text = _high_entropy_sub(text)
    text = _ipv6_sub(text)
    text = _IPV4.sub(_tag("ip"), text)
    text = _STREET.sub(_tag("address"), text)
    text = _STREET_ANY_CASE.sub(_tag("address"), text)
    text = _UK_POSTCODE.sub(_tag("address"), text)
    text = _outside(_UUID, text, _number_run_sub)
    text = _outside(_UUID, text, _card_loose_sub)
    return text


def _fixpoint(text: str, step) -> str:
    # One replacement can expose another match (text rejoined around a tag); repeat until stable,
    # which is also what makes redaction idempotent.
    for _ in range(8):
        new = step(text)
        if new == text:
            return new
        text = new
    return text


def _echo_sub(text: str, echoes: list[tuple[re.Pattern, str]]) -> str:
    for pattern, kind in echoes:
        text = pattern.sub(_tag(kind), text)
    return text


def _echo_patterns(known: Iterable[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    """Patterns for personal values seen under sensitive keys: the whole value, and for names
    each word, matched case-insensitively on word boundaries."""
    needles: dict[str, str] = {}
    for value, kind in known:
        value = value.strip()
        if len(value) >= 3 and not _TAG_RE.fullmatch(value):
            needles.setdefault(value.lower(), kind)
        if kind == "name":
            for word in value.split():
                if len(word) >= 3:
                    needles.setdefault(word.lower(), kind)
    # Longest first, so a full name goes before its parts.
    return [
        (re.compile(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", re.IGNORECASE), kind)
        for needle, kind in sorted(needles.items(), key=lambda item: -len(item[0]))
    ]


def redact_text(text: str, *, known: Iterable[str | tuple[str, str]] = ()) -> str:
    """Scrub emails, cards, phones, IPs, secrets and addresses from free text.

    `known` adds values to remove wherever they appear (e.g. the buyer's name when scrubbing a
    traceback of their event): strings, tagged `[personal]`, or (value, tag) pairs such as
    ("Alice Liddell", "name"), whose words are removed one by one too.
    """
    if not isinstance(text, str):
        text = str(text)
    echoes = _echo_patterns(_known_pairs(known))
    if echoes:
        text = _echo_sub(text, echoes)
    return _fixpoint(text, _full_pass)


# --- Structures -----------------------------------------------------------------------------------


def _key_normalise(key: str) -> str:
    return re.sub(r"[\s\-]+", "_", key.strip().lower())


def key_rule(key: str) -> tuple[str, str | None]:
    """("allow", None), ("tag", kind) or ("scan", None) for a dict key."""
    name = _key_normalise(key)
    if name in ALLOWED_KEYS:
        return "allow", None
    kind = SENSITIVE_KEYS.get(name)
    if kind:
        return "tag", kind
    for fragment, kind in PERSONAL_KEY_PARTS:
        if fragment in name:
            return "tag", kind
    tag = _TAG_RE.search(name)
    if tag:
        return "tag", tag.group()[1:-1]
    return "scan", None


def _collect_known(value, out: list[tuple[str, str]], depth: int = 0, kind: str | None = None) -> None:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            rule, key_kind = key_rule(str(key))
            # The innermost personal key names the kind: `name` inside `customer_details`.
            _collect_known(item, out, depth + 1, key_kind if rule == "tag" else kind)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _collect_known(item, out, depth + 1, kind)
    elif kind and isinstance(value, str):
        out.append((value, kind))


def _scalar_json(value):
    """JSON-safe form of a scalar; None when it is not a scalar we know."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "[binary]"
    return None


def _is_scalar(value) -> bool:
    return not isinstance(value, (Mapping, list, tuple, set, frozenset))


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _clean_text(value: str) -> str:
    # PostgreSQL's jsonb holds neither NUL characters nor lone surrogates.
    return _UNSTORABLE.sub("\ufffd", value)


class _Redactor:
    def __init__(self, echoes):
        self.echoes = echoes

    def text(self, value: str) -> str:
        value = _clean_text(value)
        if self.echoes:
            value = _echo_sub(value, self.echoes)
        return _fixpoint(value, _full_pass)

    def value(self, value, depth: int, rule: str = "scan"):
        if depth > MAX_DEPTH:
            return "[truncated]"
        if isinstance(value, Mapping):
            return self.mapping(value, depth)
        if isinstance(value, (list, tuple, set, frozenset)):
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            return [self.value(item, depth + 1, rule) for item in items]
        if isinstance(value, str):
            if rule == "allow":
                return _fixpoint(_clean_text(value), _precise_pass)
            return self.text(value)
        if rule != "allow" and isinstance(value, int) and not isinstance(value, bool) and 13 <= len(str(abs(value))) <= 19:
            # A card stored as a JSON number (`{"note": 4242424242424242}`) is still a card.
            if luhn_valid(str(abs(value))):
                return _tag("card")
        scalar = _scalar_json(value)
        if scalar is not None or value is None:
            return scalar if not isinstance(scalar, str) or rule == "allow" else self.text(scalar)
        return self.text(str(value))

    def mapping(self, value: Mapping, depth: int) -> dict:
        out: dict = {}
        for raw_key, item in value.items():
            key = self.text(str(raw_key))
            rule, kind = key_rule(key)
            if rule == "tag":
                redacted = None if item is None else _tag(kind)
            elif rule == "allow" and _is_scalar(item):
                redacted = self.value(item, depth + 1, "allow")
            elif rule == "allow" and isinstance(item, (list, tuple)) and all(map(_is_scalar, item)):
                redacted = [self.value(element, depth + 1, "allow") for element in item]
            else:
                redacted = self.value(item, depth + 1)
            unique, suffix = key, 2
            while unique in out:
                unique, suffix = f"{key}#{suffix}", suffix + 1
            out[unique] = redacted
        return out


def _known_pairs(known) -> list[tuple[str, str]]:
    pairs = []
    for item in known:
        if isinstance(item, str):
            pairs.append((item, "personal"))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            pairs.append((item[0], item[1] if item[1] in TAGS else "personal"))
    return pairs


def redact(data, *, known: Iterable[str | tuple[str, str]] = ()):
    """A redacted, JSON-safe copy of `data` (see the module docstring for the rules)."""
    found: list[tuple[str, str]] = []
    _collect_known(data, found)
    found.extend(_known_pairs(known))
    return _Redactor(_echo_patterns(found)).value(data, 0)


# --- Audit data: allow-list per action ------------------------------------------------------------

DROPPED = "[dropped]"
NOTE_MAX_CHARS = 500

_ID_VALUE = re.compile(r"^[A-Za-z0-9_\-:.]{1,255}$")
_LABEL_WORD = re.compile(r"^[a-z][a-z0-9_\-:.]{0,39}$")
_CODE_VALUE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-:.]{0,127}$")
# Our keyed fingerprints (16 hex) and SHA-256 digests; not 40 hex, the shape of an API token.
_HASH_VALUE = re.compile(r"^(?:sha256:)?(?:[0-9a-f]{16}|[0-9a-f]{64})$")
_CURRENCY_VALUE = re.compile(r"^[A-Za-z]{3}$")
_LONG_HEX = re.compile(r"[0-9A-Fa-f]{32,}")


def identifier_safe(value: str) -> bool:
    """Whether a string with an identifier's alphabet is not, in fact, personal data or a secret:
    no email, known secret shape, IP address, card or phone number, or long hex token (an API key)
    hides in it. UUIDs are fine; provider ids (`cus_…`, `evt_…`) are fine."""
    if _precise_pass(value) != value:
        return False
    if _LONG_HEX.search(_UUID.sub("", value)):
        return False
    for piece in re.split(r"[:_]", value) + [value]:
        try:
            ipaddress.ip_address(piece)
            return False
        except ValueError:
            pass
    if _IPV4.search(value) or _ipv6_sub(value) != value:
        return False
    return _outside(_UUID, value, _number_run_sub) == value


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _timestamp_ok(value) -> bool:
    if _int(value):
        return 0 <= value < 2**40
    if not isinstance(value, str) or len(value) > 40:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _kind_ok(kind, value) -> bool:
    if kind == "id":
        if _int(value):
            # Our row ids; a longer number could be a card or a phone number stored as a number.
            return 0 <= value < 10**12
        if isinstance(value, UUID):
            return True
        return isinstance(value, str) and bool(_ID_VALUE.match(value)) and identifier_safe(value)
    if kind == "code":
        return isinstance(value, str) and bool(_CODE_VALUE.match(value)) and identifier_safe(value)
    if kind == "label":
        words = value.split(" ") if isinstance(value, str) and len(value) <= 100 else []
        return 0 < len(words) <= 6 and all(_LABEL_WORD.match(word) and identifier_safe(word) for word in words)
    if kind in ("amount",):
        return _int(value) and abs(value) < 2**63
    if kind == "count":
        return _int(value) and 0 <= value < 2**63
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "currency":
        return isinstance(value, str) and bool(_CURRENCY_VALUE.match(value))
    if kind == "timestamp":
        return _timestamp_ok(value)
    if kind == "hash":
        return isinstance(value, str) and bool(_HASH_VALUE.match(value))
    if isinstance(kind, tuple) and kind[0] == "enum":
        return isinstance(value, str) and value in kind[1]
    return False


def _shape(kind, value):
    """`value` kept when it has its kind's shape (null always), else `[dropped]`."""
    if value is None:
        return None
    if isinstance(kind, list):
        if not isinstance(value, (list, tuple)):
            return DROPPED
        return [_shape(kind[0], item) for item in value]
    if isinstance(kind, dict):
        if not isinstance(value, Mapping):
            return DROPPED
        return {key: _shape(kind[key], item) for key, item in value.items() if isinstance(key, str) and key in kind}
    if kind == "note":
        # An operator's note is the one free text an auditor needs (why a dead letter was resolved,
        # why access was revoked): kept, but through every detector and capped.
        return redact_text(value)[:NOTE_MAX_CHARS] if isinstance(value, str) else DROPPED
    if not _kind_ok(kind, value):
        return DROPPED
    return str(value) if isinstance(value, UUID) else value


def audit_data_shape(*, action: str, data) -> dict:
    """The audit `data` of `action`: only the keys its allow-list names (`audit.actions`), each
    value kept only when it has its kind's shape. An action without an allow-list keeps nothing
    but a marker. The only free text kept is an operator's `note`, passed through every detector."""
    allowed = ALLOWED_DATA.get(action)
    if allowed is None:
        return {DROPPED: "no allow-list for this action"}
    if not isinstance(data, Mapping):
        return {}
    return _shape(allowed, data)
