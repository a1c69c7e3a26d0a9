from datetime import UTC

import django_filters
from django.core.exceptions import ValidationError


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 datetime, compared in UTC.

    Any offset parses, but PostgreSQL refuses displacements past ±15:59, and a value at the
    calendar's edge has no UTC equivalent (0001-01-01T00:00:00+01:00 is in year 0): both were 500s.
    Converted here, the query carries +00:00 and an impossible value is the client's 400.
    """

    def filter(self, qs, value):
        if value:
            try:
                value = value.astimezone(UTC)
            except OverflowError:
                raise ValidationError(f"{self.field_name}: the datetime is outside the representable range") from None
        return super().filter(qs, value)
