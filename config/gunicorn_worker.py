"""gunicorn's sync worker with two changes for a service that answers providers, not browsers.

- Every read from a client has a deadline (GUNICORN_READ_TIMEOUT, default 5 s): a client that stops
  sending mid-headers or mid-body loses its connection instead of holding the worker until gunicorn's
  30 s timeout kills it (a slowloris). Production also buffers whole requests in the proxy in front
  (deploy/Caddyfile), so gunicorn only ever sees complete requests there.
- The errors gunicorn answers itself, before any Django code runs (a malformed request line, a header
  past the limits, broken framing), are JSON `{"error": code}` like every other error on /webhooks/
  and /api/, not gunicorn's HTML page.
"""

import json
import os

from gunicorn import util
from gunicorn.workers.sync import SyncWorker

READ_TIMEOUT_SECONDS = float(os.environ.get("GUNICORN_READ_TIMEOUT", "5"))


def json_error_write(sock, status_int, reason, mesg):
    """Replaces gunicorn.util.write_error: same status and reason, a JSON body without `mesg` (it can
    quote the request's own bytes back)."""
    body = json.dumps({"error": reason.lower().replace(" ", "_").replace("-", "_")}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = json_error_write  # gunicorn.workers.base calls it as util.write_error


class DeadlineSyncWorker(SyncWorker):
    def accept(self, listener):
        client, addr = listener.accept()
        client.settimeout(READ_TIMEOUT_SECONDS)  # blocking, but each recv gives up after the deadline
        util.close_on_exec(client)
        self.handle(listener, client, addr)
