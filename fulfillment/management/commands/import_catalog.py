import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from fulfillment.exceptions import FulfillmentError
from fulfillment.services import catalog_import


class Command(BaseCommand):
    help = "Import products (price id → entitlement keys) from a JSON file; safe to run again."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    def handle(self, *args, file: Path, **options):
        try:
            data = json.loads(file.read_text())
        except FileNotFoundError:
            raise CommandError(f"no such file: {file}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CommandError(f"{file} is not valid JSON (line {getattr(exc, 'lineno', '?')})") from None
        try:
            result = catalog_import(data=data, actor="system", source="import_catalog")  # audited per product
        except FulfillmentError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"catalog imported: {result.created} created, {result.updated} updated, {result.unchanged} unchanged")
