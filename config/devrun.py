"""`make run`'s preflight: refuse a taken port in one line, then say what runs where and what to try.

Runs before honcho starts the processes; it imports nothing from Django, so it answers at once.
"""

import errno
import os
import socket
import sys
from pathlib import Path

BANNER = """\
payhook is starting (web, worker and beat; Ctrl-C stops all three).

  service   {base}/
  admin     {base}/admin/            (create a login: .venv/bin/python manage.py createsuperuser)
  API       {base}/api/v1/
  API docs  {base}/api/docs/         (after logging in to the admin; schema: {base}/api/schema/)

See an event go through, in a second terminal:
  .venv/bin/python manage.py webhook_endpoint create stripe --scheme stripe --secret whsec_dev_0123456789abcdef
  .venv/bin/python manage.py import_catalog docs/examples/catalog.json
  .venv/bin/python manage.py send_test_webhook stripe checkout.session.completed{url_option}

Below: one line per event and per problem. Data: var/ (mail to a recipient lands in var/mail/).
"""


def port_taken(host: str, port: int) -> bool:
    """True when something listens on host:port (a socket in TIME_WAIT does not count: gunicorn reuses it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def metrics_dir_reset(path: str) -> None:
    """Create PROMETHEUS_MULTIPROC_DIR and empty it of an earlier run's files: the processes about to
    start write their metrics there, and /metrics would otherwise add the last run's counts to theirs."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """`devrun.py [--check] PORT`: exit 1 with one line if PORT is taken; without --check, print the banner."""
    args = argv[1:]
    check_only = "--check" in args
    args = [arg for arg in args if arg != "--check"]
    port = int(args[0]) if args else 8000
    if port_taken("127.0.0.1", port):
        print(f"port {port} is taken: stop what uses it or run `make run PORT={port + 1}`", file=sys.stderr)
        return 1
    if check_only:
        return 0
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir_reset(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    base = f"http://127.0.0.1:{port}"
    url_option = "" if port == 8000 else f" --url {base}/webhooks/stripe/"
    print(BANNER.format(base=base, url_option=url_option), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
