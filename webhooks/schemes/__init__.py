"""Signature scheme registry.

A new scheme joins by adding one module that exposes `scheme` (a `base.Scheme`) and one line here.
Modules are imported on first use.
"""

import importlib

from webhooks.schemes.base import Scheme, SigningKey, VerifiedDelivery

SCHEMES = {
    "stripe": "webhooks.schemes.stripe",
    "standard": "webhooks.schemes.standard",
}

_loaded: dict[str, Scheme] = {}


def scheme_get(name: str) -> Scheme:
    try:
        return _loaded[name]
    except KeyError:
        pass
    if name not in SCHEMES:
        raise KeyError(f"unknown signature scheme {name!r}; known: {', '.join(sorted(SCHEMES))}")
    scheme = importlib.import_module(SCHEMES[name]).scheme
    _loaded[name] = scheme
    return scheme


def scheme_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in SCHEMES]


__all__ = ["SCHEMES", "Scheme", "SigningKey", "VerifiedDelivery", "scheme_choices", "scheme_get"]
