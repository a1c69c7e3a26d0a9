"""Scan helpers for "no personal data in clear" assertions; reusable by any test."""

import json
import re
from collections.abc import Iterable, Iterator

from django.apps import apps

_SEPARATORS = re.compile(r"[\s\-.()]")


def _forms(needle: str) -> set[str]:
    """The needle, lower-cased, plus its separator-free form for numbers (cards, phones), which
    may be stored as `4242424242424242` although given as `4242 4242 4242 4242`."""
    forms = {needle.lower()}
    compact = _SEPARATORS.sub("", needle)
    if len(re.sub(r"\D", "", compact)) >= 7 and re.fullmatch(r"\+?\d+", compact):
        forms.add(compact)
    if re.fullmatch(r"[A-Za-z]{2}\d{2}[A-Za-z0-9]{11,30}", compact):  # an IBAN, however grouped
        forms.add(compact.lower())
    return forms


def assert_no_pii(texts: Iterable[str], needles: Iterable[str]) -> None:
    """Fail if any needle (an email, name, card number, …) occurs in any text, ignoring case;
    numbers are also looked for without their spaces, dashes, dots and parentheses."""
    texts = [str(text) for text in texts]
    lowered = [text.lower() for text in texts]
    compacted = [_SEPARATORS.sub("", text) for text in texts]
    hits = []
    for needle in {n for n in needles if n and n.strip()}:
        for form in _forms(needle):
            for index, (low, compact) in enumerate(zip(lowered, compacted)):
                if form in low or ((form.lstrip("+").isdigit() or form.isalnum()) and form in compact.lower()):
                    hits.append((needle, index))
    assert not hits, f"{len(hits)} personal value(s) found in clear, e.g. {hits[0][0]!r} in text #{hits[0][1]}"


def model_row_texts(app_label: str) -> Iterator[str]:
    """Every row of every table of an app, each as one JSON text of all its columns."""
    for model in apps.get_app_config(app_label).get_models():
        columns = [field.attname for field in model._meta.concrete_fields]
        for row in model.objects.values_list(*columns):
            yield json.dumps(dict(zip(columns, row)), default=str, ensure_ascii=False)


def audit_table_texts() -> Iterator[str]:
    return model_row_texts("audit")


# --- Shapes of personal data and secrets, for acceptance scans ---------------------------------------
# Each is a value some test drives through the system; a scan asserts none of them is found in
# clear. `assert_no_pii` also looks for digit needles without their separators, so a card given
# as `4242.4242.4242.4242` is found stored as `4242424242424242`.

PII_EMAIL = "carol.personal@example.org"
PII_EMAIL_QUOTED = '"john doe"@example.com'
PII_NAME = "Carolina Quintessa Smith"
PII_PHONE = "+1 415 555 0199"
PII_STREET = "742 Evergreen Terrace"
PII_STREET_FOREIGN = "12 rue de Rivoli"
PII_CARD = "4242 4242 4242 4242"
PII_CARD_DOTTED = "4000.0566.5566.5556"
PII_CARD_DOUBLE_SPACED = "5555  5555  5555  4444"
PII_CARD_NUMBER = 4012888888881881  # a card stored as a JSON number
PII_IBAN = "DE89 3704 0044 0532 0130 00"
PII_IP = "203.0.113.77"
PII_IPV6 = "2001:db8::8a2e:370:7334"
PII_SECRET = "sk_live_51HfakeSecretToken0123456789abcdef"
PII_HEX_TOKEN = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"  # a DRF token key: 40 lower-case hex

PII_SHAPES = [
    PII_EMAIL, PII_EMAIL_QUOTED, "john doe", PII_NAME, PII_PHONE, PII_STREET, PII_STREET_FOREIGN,
    PII_CARD, PII_CARD_DOTTED, PII_CARD_DOUBLE_SPACED, str(PII_CARD_NUMBER), PII_IBAN, PII_IBAN.replace(" ", ""),
    PII_IP, PII_IPV6, PII_SECRET, PII_HEX_TOKEN,
]


def pii_note() -> str:
    """Free text carrying every shape, as a buyer's note or a library's error message would."""
    return (
        f"call {PII_NAME} on {PII_PHONE} at {PII_STREET} or {PII_STREET_FOREIGN}; cards {PII_CARD}, "
        f"{PII_CARD_DOTTED}, {PII_CARD_DOUBLE_SPACED}, {PII_CARD_NUMBER}; iban {PII_IBAN}; from {PII_IP} / "
        f"{PII_IPV6}; keys {PII_SECRET} {PII_HEX_TOKEN}; mail {PII_EMAIL} and {PII_EMAIL_QUOTED}"
    )
