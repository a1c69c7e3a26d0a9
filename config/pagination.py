from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import pagination
from rest_framework.exceptions import NotFound

from config.exceptions import ApplicationError


class InvalidCursor(ApplicationError):
    code = "invalid_cursor"


class CursorPagination(pagination.CursorPagination):
    """DRF's cursor pagination, with a cursor the client altered refused as a 400 `invalid_cursor`.

    DRF signs nothing: `?cursor=` is base64 of `p=<position>`, and a position of the wrong type
    reached the database filter and came back as a 500.
    """

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise InvalidCursor("the cursor is not one this API issued") from None

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except (DjangoValidationError, ValueError, OverflowError):
            if not request.query_params.get(self.cursor_query_param):
                raise
            raise InvalidCursor("the cursor is not one this API issued") from None
