"""One strict JSON parser for bytes from outside: the webhook receiver's verified bodies and the API's
request bodies. Python's json module accepts NaN and Infinity, keeps the last of duplicate keys,
decodes lone surrogates, guesses UTF-16/32, and recurses once per nesting level."""

import json
import math
import re

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


# A JSON string, so that brackets inside strings are not counted (possessive: no backtracking).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]++")
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")
# A \uD800–\uDFFF escape: the only way a lone surrogate gets into valid UTF-8 JSON.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def json_nests_deeper_than(data: bytes, limit: int) -> bool:
    """Whether `data` nests brackets more than `limit` deep (brackets inside strings ignored); never
    recurses. A body with at most `limit` opening brackets cannot (two C-level counts: most events).
    Otherwise each pass removes the innermost bracket pairs in the regex engine, at most `limit`
    passes, instead of a Python step per token."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", data))
    for _ in range(limit):
        brackets, removed = _INNERMOST_PAIR.subn(b"", brackets)
        if not brackets or not removed:
            return False  # fully unnested within the limit, or unbalanced (the parser refuses it)
    return True  # pairs are left after `limit` levels were peeled off


@sensitive_variables("body", "text", "payload")
def strict_json_loads(body: bytes):
    """Parse strict RFC 8259 JSON or raise NotStrictJson: UTF-8 only, no NaN/Infinity, no duplicate
    keys, no lone surrogates, at most MAX_JSON_DEPTH levels deep."""
    if json_nests_deeper_than(body, MAX_JSON_DEPTH):
        raise NotStrictJson("the body nests deeper than allowed")
    try:
        text = body.decode("utf-8")  # json.loads(bytes) would also accept UTF-16 and UTF-32
        payload = json.loads(
            text, parse_constant=_constant_refuse, parse_float=_float_parse, object_pairs_hook=_object_build
        )
        # "\ud800" parses to a lone surrogate that no UTF-8 encoder (nor PostgreSQL) accepts; only an
        # escape can produce one (the UTF-8 decoder refuses encoded surrogates), so most bodies skip this.
        if _SURROGATE_ESCAPE.search(body):
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except NotStrictJson:
        raise
    except (ValueError, RecursionError):  # UnicodeError and JSONDecodeError are ValueErrors
        raise NotStrictJson("the body is not strict JSON") from None
    return payload
