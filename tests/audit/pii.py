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
                if form in low or (form.lstrip("+").isdigit() and form in compact):
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
