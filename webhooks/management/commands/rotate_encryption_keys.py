from django.core.management.base import BaseCommand
from django.db import transaction

from config import encryption
from fulfillment.models import Customer
from webhooks.models import EndpointSecret, WebhookEvent

# Every encrypted column: (model, field). A new encrypted field must be added here.
ENCRYPTED_FIELDS = [
    (WebhookEvent, "body_encrypted"),
    (WebhookEvent, "headers_encrypted"),
    (EndpointSecret, "value_encrypted"),
    (Customer, "email_encrypted"),
]


class Command(BaseCommand):
    help = "Re-encrypt every encrypted column under the first key of FIELD_ENCRYPTION_KEYS."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, batch_size: int, **options):
        for model, field in ENCRYPTED_FIELDS:
            done = 0
            pks = list(model.objects.exclude(**{f"{field}__isnull": True}).values_list("pk", flat=True))
            for start in range(0, len(pks), batch_size):
                with transaction.atomic():
                    rows = model.objects.select_for_update().filter(pk__in=pks[start : start + batch_size]).only("pk", field)
                    for row in rows:
                        setattr(row, field, encryption.rotate(getattr(row, field)))
                    model.objects.bulk_update(rows, [field])
                    done += len(rows)
            self.stdout.write(f"{model._meta.label}.{field}: {done} re-encrypted")
        self.stdout.write("done: every value is now encrypted under the first key; older keys can be removed")
