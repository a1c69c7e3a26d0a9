"""The least a correct Stripe receiver must do: verify the HMAC over the raw bytes, parse the JSON,
store it once with one INSERT … ON CONFLICT DO NOTHING (autocommit: the statement is the commit).

No encryption, no content hash, no metrics, no broker. The secret comes from BENCH_IDEAL_SECRET;
the table `bench_ideal_event` is created by bench/ingest.py.
"""

import hashlib
import hmac
import json
import os
import time

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

_SECRET = os.environ.get("BENCH_IDEAL_SECRET", "").encode()
_TOLERANCE = 300
_SQL = (
    "INSERT INTO bench_ideal_event (idempotency_key, event_type, body) VALUES (%s, %s, %s) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)


@csrf_exempt
def ideal_receive(request, slug):
    if request.method != "POST":
        return JsonResponse({"error": "method_not_allowed"}, status=405)
    body = request.body
    header = request.headers.get("Stripe-Signature", "")
    timestamp, signatures = None, []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            try:
                signatures.append(bytes.fromhex(value))
            except ValueError:
                pass
    if timestamp is None or not signatures:
        return JsonResponse({"error": "malformed_signature"}, status=400)
    expected = hmac.new(_SECRET, str(timestamp).encode() + b"." + body, hashlib.sha256).digest()
    if not any(hmac.compare_digest(expected, signature) for signature in signatures):
        return JsonResponse({"error": "invalid_signature"}, status=400)
    if abs(time.time() - timestamp) > _TOLERANCE:
        return JsonResponse({"error": "timestamp_out_of_tolerance"}, status=400)
    try:
        payload = json.loads(body)
        event_id = payload["id"]
    except (ValueError, TypeError, KeyError):
        return JsonResponse({"error": "invalid_payload"}, status=400)
    with connection.cursor() as cursor:
        cursor.execute(_SQL, [f"{slug}:{event_id}", str(payload.get("type") or "")[:128], body])
        row = cursor.fetchone()
    if row is None:
        return JsonResponse({"status": "duplicate", "event_id": event_id})
    return JsonResponse({"status": "accepted", "event_id": str(row[0])})
