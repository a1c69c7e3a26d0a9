"""One strict JSON parser for bytes from outside: the webhook receiver's verified bodies and the API's
request bodies. Python's json module accepts NaN and Infinity, keeps the last of duplicate keys,
decodes lone surrogates, guesses UTF-16/32, and recurses once per nesting level."""

import json
import math
import re
from itertools import accumulate

from django.views.decorators.debug import sensitive_variables

# Provider payloads nest a handful of levels; json.loads recurses per level and would raise
# RecursionError somewhere near 1,000, so depth is counted on the bytes before parsing.
MAX_JSON_DEPTH = 64


class NotStrictJson(ValueError):
    """The bytes are not strict JSON; the message says which rule failed, never the content."""


def _constant_refuse(name: str):
    raise NotStrictJson(f"{name} is not JSON")


def _float_parse(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: valid syntax, but it would be stored and hashed as Infinity
        raise NotStrictJson("a number out of range")
    return value


def _object_build(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # RFC 8259 leaves duplicate names undefined; parsers disagree on which one wins.
        raise NotStrictJson("an object with a duplicate key")
    return obj


# A JSON string (so that brackets inside strings are not counted), or one bracket.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(data: bytes) -> int:
    """The deepest bracket nesting of `data`, brackets inside strings ignored; never recurses."""
    steps = (_DEPTH_STEP.get(m.group()[0], 0) for m in _STRING_OR_BRACKET.finditer(data))
    return max(accumulate(steps), default=0)


@sensitive_variables("body", "text", "payload")
def strict_json_loads(body: bytes):
    """Parse strict RFC 8259 JSON or raise NotStrictJson: UTF-8 only, no NaN/Infinity, no duplicate
    keys, no lone surrogates, at most MAX_JSON_DEPTH levels deep."""
    if json_depth(body) > MAX_JSON_DEPTH:
        raise NotStrictJson("the body nests deeper than allowed")
    try:
        text = body.decode("utf-8")  # json.loads(bytes) would also accept UTF-16 and UTF-32
        payload = json.loads(
            text, parse_constant=_constant_refuse, parse_float=_float_parse, object_pairs_hook=_object_build
        )
        # "\ud800" parses to a lone surrogate that no UTF-8 encoder (nor PostgreSQL) accepts.
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except NotStrictJson:
        raise
    except (ValueError, RecursionError):  # UnicodeError and JSONDecodeError are ValueErrors
        raise NotStrictJson("the body is not strict JSON") from None
    return payload
