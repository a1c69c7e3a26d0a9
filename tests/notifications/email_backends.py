"""Email backends that fail the way real ones do, for the failure-path tests."""

import smtplib

from django.core.mail.backends.base import BaseEmailBackend


class RefusingEmailBackend(BaseEmailBackend):
    """Fails like an SMTP server refusing the recipient: the error text quotes the address."""

    def send_messages(self, email_messages):
        recipients = {address: (550, f"5.1.1 <{address}>: mailbox unavailable".encode()) for m in email_messages for address in m.to}
        raise smtplib.SMTPRecipientsRefused(recipients)
