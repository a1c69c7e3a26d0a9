# gunicorn reads WEB_CONCURRENCY itself for the worker count; these are the rest of its settings.
import os

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# No access log by default: request lines can carry client addresses.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
# Header limits, raised from gunicorn's defaults (100 fields, 8,190 bytes a field) so that the app,
# not gunicorn's HTML error page, answers a hostile signature header: the schemes refuse more than
# 32 signature entries with a JSON 400 malformed_signature, and a header up to 32 KiB reaches them.
# Past these limits gunicorn itself answers 431/400 (plain HTML, nothing read or stored); a proxy in
# front usually refuses far less (nginx: 8 KiB per header line by default), which is fine too.
limit_request_fields = 200
limit_request_field_size = 32768
