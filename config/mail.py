"""Development mail: each message is written to a file under EMAIL_FILE_PATH (var/mail/ under
`make run`) and one log line names that file, never a recipient, a subject or a body."""

import logging
import os
import secrets
from datetime import datetime

from django.core.mail.backends.filebased import EmailBackend as FileBasedEmailBackend

logger = logging.getLogger(__name__)


class FileEmailBackend(FileBasedEmailBackend):
    """Django's file backend (one file per connection), plus the line that says where the mail went."""

    def _get_filename(self):
        # Django's name (`20261202-161221-<id(self)>.log`) is a run of digits the logs' redactor
        # takes for a card number now and then. Letters between the digit groups and a short run
        # (under the 24 characters of a possible secret) keep the name readable in the line.
        if self._fname is None:
            name = f"{datetime.now():%Y%m%dT%H%M%S}-m{secrets.token_hex(3)}.log"
            self._fname = os.path.join(self.file_path, name)
        return self._fname

    def send_messages(self, email_messages):
        count = super().send_messages(email_messages)
        if count:
            # The name only: the directory is EMAIL_FILE_PATH, and a full path can name the developer.
            logger.info("mail written to a file", extra={"file": os.path.basename(self._get_filename()), "messages": count})
        return count
