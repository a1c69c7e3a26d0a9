from django.core.management.base import BaseCommand, CommandError

from audit.exceptions import AuditChainBroken
from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Walk the audit hash chain; exit non-zero if an entry was altered, removed or inserted."

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=2000, help="Entries read per round trip.")

    def handle(self, *args, chunk_size, **options):
        try:
            count, last_hash = audit_chain_verify(chunk_size=chunk_size)
        except AuditChainBroken as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"audit chain OK: {count} entries, last hash {last_hash}")
