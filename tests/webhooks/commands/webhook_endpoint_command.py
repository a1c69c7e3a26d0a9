"""Run `manage.py webhook_endpoint` in-process: its output, or its one-line CommandError."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command


def webhook_endpoint_run(*args) -> str:
    out = StringIO()
    call_command("webhook_endpoint", *args, stdout=out)
    return out.getvalue()


def webhook_endpoint_error(*args) -> str:
    with pytest.raises(CommandError) as excinfo:
        webhook_endpoint_run(*args)
    message = str(excinfo.value)
    assert "\n" not in message.strip()
    return message
