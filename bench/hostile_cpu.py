"""CPU cost of the worst hostile request's signature check, in-process (issue 8, part 3).

Times `scheme.verify` with time.process_time on a 1 MiB body, two keys on the endpoint and a
signature header packed with wrong entries, as an unauthenticated client can send it. Nothing
verifies, so this is all pre-authentication work. No database or broker is needed.

    .venv/bin/python bench/hostile_cpu.py                       # this checkout
    git archive 41f690b | tar -x -C /tmp/payhook-41f690b
    .venv/bin/python bench/hostile_cpu.py --root /tmp/payhook-41f690b   # the code before the fix

Prints one line per scenario: seconds of CPU per request (best of --repeat) and the outcome.
"""

import argparse
import base64
import os
import secrets
import sys
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

BODY_BYTES = 1024 * 1024
CAP = 32  # providers.base.MAX_SIGNATURE_ENTRIES on the branch that adds it


def _v1a_entry() -> str:
    # A real ed25519 signature by another key: S below the group order and R a point, so a verifier
    # cannot refuse it before hashing the message (random bytes would be refused cheaply).
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return "v1a," + base64.b64encode(Ed25519PrivateKey.generate().sign(secrets.token_bytes(8))).decode()


# (scheme, label, one entry, separator): entries an attacker packs into the signature header.
ENTRY_KINDS = [
    ("stripe", "v1=00 (1 byte)", lambda: "v1=00", ","),
    ("stripe", "full-size v1", lambda: "v1=" + secrets.token_hex(32), ","),
    ("standard", "v1,AA (1 byte)", lambda: "v1,AA", " "),
    ("standard", "full-size v1", lambda: "v1," + base64.b64encode(secrets.token_bytes(32)).decode(), " "),
    ("standard", "full-size v1a", _v1a_entry, " "),
]


def scenarios(now: int, cap: int) -> list[tuple[str, str, dict]]:
    """For each kind of entry: as many as the new cap allows, and as many as fit an 8 KiB and a 32 KiB header."""
    result = []
    for scheme, label, entry, separator in ENTRY_KINDS:
        one = entry()
        for budget in (None, 8190, 32768):
            count = cap if budget is None else (budget - 16) // (len(one) + len(separator))
            where = f"cap {cap}" if budget is None else f"{round(budget / 1024)} KiB header"
            joined = separator.join(entry() for _ in range(count))
            if scheme == "stripe":
                headers = {"Stripe-Signature": f"t={now},{joined}"}
            else:
                headers = {"webhook-id": "msg_hostile", "webhook-timestamp": str(now), "webhook-signature": joined}
            result.append((f"{scheme:8} {count:5} × {label:15} ({where})", scheme, headers))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="checkout to measure")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from providers import scheme_get

    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    keys = {
        "stripe": [scheme_get("stripe").secret_parse("whsec_" + secrets.token_hex(16)) for _ in range(2)],
        "standard": [
            scheme_get("standard").secret_parse("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()),
            scheme_get("standard").secret_parse("whpk_" + base64.b64encode(public).decode()),
        ],
    }
    body = b'{"id": "evt_hostile", "pad": "' + b"x" * (BODY_BYTES - 33) + b'"}'
    now = int(time.time())
    print(f"root {args.root.resolve()}  body {len(body):,} bytes  keys per endpoint 2")
    for name, scheme_name, headers in scenarios(now, CAP):
        scheme = scheme_get(scheme_name)
        best, outcome = float("inf"), ""
        for _ in range(args.repeat):
            start = time.process_time()
            try:
                scheme.verify(headers=headers, body=body, keys=keys[scheme_name], tolerance=300, now=now)
                outcome = "verified?!"
            except Exception as exc:  # noqa: BLE001 - the outcome is what we report
                outcome = getattr(exc, "code", type(exc).__name__)
            best = min(best, time.process_time() - start)
        print(f"{best:9.4f} s  {outcome:22}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
