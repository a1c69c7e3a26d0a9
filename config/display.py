"""How ids that may carry personal data are shown, and which search terms are refused.

A provider customer id or payment id is the sender's choice: merchants set Adyen's
`shopperReference` to the buyer's email, a Stripe sender may put one in `customer` or
`payment_intent`. Wherever such an id is rendered (the customer lookup, the customers admin, the
entitlements API), `id_display` shows it unchanged when the detectors the Sentry scrubber and the
audit redactor share (`config.sentry.text_scrub`) find nothing in it, and otherwise a masked form:
what it looked like and the last characters of a keyed hash, so support can still tell two such
ids apart, never the value. Searching by the value itself still works (its hash is what matches).
"""

import hashlib
import hmac
import re
import unicodedata

from django.conf import settings

from config.sentry import text_scrub

# The redactor's placeholders (`[email]`, `[dropped]`…): what it left of a value, never an id.
_PLACEHOLDER = re.compile(r"\[([a-z_]+)\]")
_MASK_HASH_CHARS = 4
# Unicode categories a search term may not hold: controls (NUL, U+0085), format characters (U+202E
# the right-to-left override, zero-width joiners), surrogates, private use, unassigned, and the line
# and paragraph separators (U+2028, U+2029).
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
SEARCH_TERM_MAX_LENGTH = 255


def is_placeholder(value) -> bool:
    """True for what the redactor leaves instead of a value (`[dropped]`, `[email]`…)."""
    return isinstance(value, str) and bool(_PLACEHOLDER.fullmatch(value))


def _keyed_tail(value: str) -> str:
    digest = hmac.new(settings.BLIND_INDEX_KEY.encode(), f"id_display\x00{value}".encode(), hashlib.sha256).hexdigest()
    return digest[-_MASK_HASH_CHARS:]


def id_display(value) -> str | None:
    """The id as shown: unchanged when it carries no personal data, else `[email-like id …1a2b]`."""
    if value is None:
        return None
    text = str(value)
    scrubbed = text_scrub(text)
    if scrubbed == text:
        return text
    found = _PLACEHOLDER.search(scrubbed)
    what = found.group(1) if found else "personal-data"
    return f"[{what}-like id …{_keyed_tail(text)}]"


def source_display(value) -> str | None:
    """A `payment:<id>` or `subscription:<id>` source with its id shown as `id_display` does."""
    if value is None:
        return None
    prefix, sep, rest = str(value).partition(":")
    if sep and prefix in ("payment", "subscription"):
        return f"{prefix}:{id_display(rest)}"
    return id_display(value)


def search_term_problem(raw: str | None, *, max_length: int = SEARCH_TERM_MAX_LENGTH) -> str | None:
    """Why a search term (`?q=`) is refused, or None. Checked on the raw value, before stripping: a
    control or format character (a trailing newline too) is refused, never stripped or echoed."""
    raw = raw or ""
    if any(unicodedata.category(char) in REFUSED_CATEGORIES for char in raw):
        return "q may not contain control, format, separator or unassigned characters"
    if len(raw.strip()) > max_length:
        return f"q is at most {max_length} characters"
    return None
