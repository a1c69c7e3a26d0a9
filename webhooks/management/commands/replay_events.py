from collections import Counter
from datetime import datetime
from datetime import timezone as dt_timezone

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from tqdm import tqdm

from webhooks.deadletters import webhook_events_for_replay, webhook_events_reprocess_bulk
from webhooks.endpoints import webhook_endpoint_get
from webhooks.exceptions import EndpointNotFound
from webhooks.models import WebhookEvent
from webhooks.retention import payload_removed_reason

# Events per transaction: small enough to keep row locks short and the progress bar moving.
CHUNK_SIZE = 1000


def _instant(value: str, name: str) -> datetime:
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        moment = datetime(day.year, day.month, day.day) if day else None
    if moment is None:
        raise CommandError(f"--{name} {value!r} is not an ISO 8601 date or date-time")
    # A naive time is read as UTC, the service's time zone.
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, dt_timezone.utc)


class Command(BaseCommand):
    help = "Re-run stored events of one endpoint received in [--since, --until) through processing."

    def add_arguments(self, parser):
        parser.add_argument("--endpoint", required=True, help="endpoint slug")
        parser.add_argument("--since", required=True, help="ISO 8601, inclusive")
        parser.add_argument("--until", required=True, help="ISO 8601, exclusive")
        parser.add_argument("--type", dest="event_type", default=None, help="only this provider event type")
        parser.add_argument(
            "--status", action="append", default=None, choices=sorted(WebhookEvent.Status.values), metavar="STATUS",
            help="only events in this status (repeatable), e.g. --status dead --status failed",
        )
        parser.add_argument(
            "--limit", type=int, default=None,
            help="only the first N matching events (oldest first): replay a small batch, check it, then the rest",
        )
        parser.add_argument("--dry-run", action="store_true", help="count the events by status, change nothing")

    def handle(self, *args, endpoint, since, until, event_type, status, limit, dry_run, **options):
        since_at, until_at = _instant(since, "since"), _instant(until, "until")
        if since_at >= until_at:
            raise CommandError("--since must be earlier than --until")
        if limit is not None and limit < 1:
            raise CommandError("--limit must be a positive number of events")
        try:
            endpoint_row = webhook_endpoint_get(slug=endpoint)
        except EndpointNotFound:
            raise CommandError(f"unknown endpoint {endpoint!r}") from None
        selected = webhook_events_for_replay(
            endpoint=endpoint_row, since=since_at, until=until_at, event_type=event_type, statuses=status
        )
        if limit is not None:
            selected = selected[:limit]
        rows = list(selected.values_list("id", "status", "payload_removed_at"))
        removed = sum(1 for *_, removed_at in rows if removed_at is not None)
        if rows and removed == len(rows):
            raise CommandError(f"{removed} matching events cannot be replayed: {payload_removed_reason()}")
        event_ids = [event_id for event_id, _, removed_at in rows if removed_at is None]
        scope = f"endpoint={endpoint} since={since_at.isoformat()} until={until_at.isoformat()}"
        if event_type:
            scope += f" type={event_type}"
        if status:
            scope += f" status={','.join(sorted(set(status)))}"
        if limit is not None:
            scope += f" limit={limit}"
        self.stdout.write(f"{len(rows)} events match {scope}")
        if removed:
            self.stdout.write(f"skipping {removed} events: {payload_removed_reason()}")
        by_status = Counter(event_status for _, event_status, removed_at in rows if removed_at is None)
        if by_status:
            self.stdout.write("by status: " + ", ".join(f"{name} {count}" for name, count in sorted(by_status.items())))
        if dry_run:
            self.stdout.write("dry run: nothing changed")
            return
        acted = skipped = 0
        # The bar redraws with "\r"; Django's OutputWrapper would end every redraw with a newline.
        bar_file = getattr(self.stderr, "_out", self.stderr)
        with tqdm(total=len(event_ids), unit="event", file=bar_file, disable=not event_ids) as progress:
            for start in range(0, len(event_ids), CHUNK_SIZE):
                chunk = event_ids[start : start + CHUNK_SIZE]
                outcome = webhook_events_reprocess_bulk(
                    queryset=WebhookEvent.objects.filter(id__in=chunk), user=None, via="replay_events"
                )
                acted += outcome.acted
                skipped += outcome.skipped
                progress.update(len(chunk))
        self.stdout.write(f"re-queued {acted} events; skipped {skipped} still received or being processed")
