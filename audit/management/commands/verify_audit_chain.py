import re

from django.core.management.base import BaseCommand, CommandError

from audit.exceptions import AuditChainBroken
from audit.selectors import audit_chain_verify
from audit.services import audit_chain_anchor_write

_EXPECT_HEAD = re.compile(r"^(0|[1-9][0-9]{0,18}):([0-9a-f]{64})$")


class Command(BaseCommand):
    help = "Walk the keyed audit hash chain; exit non-zero if the log was altered, truncated or cut short."

    def add_arguments(self, parser):
        parser.add_argument(
            "--expect-head", metavar="ID:HASH",
            help="A head published earlier (the task logs it): fail unless the log still holds that entry with that hash.",
        )
        parser.add_argument("--chunk-size", type=int, default=2000, help="Entries read per round trip.")

    def handle(self, *args, expect_head, chunk_size, **options):
        expected = None
        if expect_head is not None:
            match = _EXPECT_HEAD.match(expect_head.strip().lower())
            if match is None:
                raise CommandError("--expect-head must be ID:HASH (an entry id and its 64-hex-digit hash)")
            expected = (int(match[1]), match[2])
        try:
            count, head_id, head_hash = audit_chain_verify(chunk_size=chunk_size, expect_head=expected)
        except AuditChainBroken as exc:
            raise CommandError(exc.message) from None
        # A verified log is a good moment to anchor the shard heads: a later cut below them fails.
        audit_chain_anchor_write()
        self.stdout.write(f"OK {count} entries, head {head_id}:{head_hash}")
