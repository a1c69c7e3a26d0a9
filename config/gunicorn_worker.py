"""gunicorn's sync worker with two changes for a service that answers providers, not browsers.

- Reading a request has deadlines: each read waits at most GUNICORN_READ_TIMEOUT (default 5 s), and
  the whole request (headers and body) must arrive within GUNICORN_REQUEST_READ_SECONDS (default
  10 s). A client that stops sending, or trickles a byte a second, loses its connection instead of
  holding the sync worker until gunicorn's 30 s timeout kills it (a slowloris). Production also
  buffers whole requests in the proxy in front (deploy/Caddyfile), so gunicorn only ever sees
  complete requests there.
- The errors gunicorn answers itself, before any Django code runs (a malformed request line, a header
  past the limits, broken framing), are JSON `{"error": code}` like every other error on /webhooks/
  and /api/, not gunicorn's HTML page.
"""

import json
import os
import socket
import time

from gunicorn import util
from gunicorn.workers.sync import SyncWorker

READ_TIMEOUT_SECONDS = float(os.environ.get("GUNICORN_READ_TIMEOUT", "5"))
REQUEST_READ_SECONDS = float(os.environ.get("GUNICORN_REQUEST_READ_SECONDS", "10"))


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


class DeadlineSocket(socket.socket):
    """A client connection whose reads share one deadline. gunicorn's parser and body reader (and so
    Django's request.body) read only through `recv`; writes keep the per-operation timeout."""

    read_deadline = 0.0

    def recv(self, size, *flags):
        remaining = self.read_deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request was not received within its deadline")
        self.settimeout(min(READ_TIMEOUT_SECONDS, remaining))
        try:
            return super().recv(size, *flags)
        finally:
            self.settimeout(READ_TIMEOUT_SECONDS)


class DeadlineSyncWorker(SyncWorker):
    def accept(self, listener):
        accepted, addr = listener.accept()
        client = DeadlineSocket(accepted.family, accepted.type, accepted.proto, fileno=accepted.detach())
        client.read_deadline = time.monotonic() + REQUEST_READ_SECONDS
        client.settimeout(READ_TIMEOUT_SECONDS)
        util.close_on_exec(client)
        self.handle(listener, client, addr)
