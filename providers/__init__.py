"""The provider registry: scheme name -> the package that implements it.

A provider is one package (providers/<name>/) exposing `scheme`, a `providers.base.Scheme`: its
signature check, its payload -> canonical facts mapping, its sample events and its signer. It joins
with one line here. Packages are imported on first use.
"""

import importlib

from providers.base import Scheme, SigningKey, VerifiedDelivery

SCHEMES = {
    "stripe": "providers.stripe",
    "standard": "providers.standard",
    "paddle": "providers.paddle",
    "lemonsqueezy": "providers.lemonsqueezy",
    "paypal": "providers.paypal",
    "adyen": "providers.adyen",
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
