from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser

from config.strict_json import NotStrictJson, strict_json_loads


class StrictJSONParser(JSONParser):
    """DRF's JSONParser recurses without a bound (a body nested 1,000 deep was a 500) and accepts
    NaN and duplicate keys; this one parses as strictly as the webhook receiver does."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return strict_json_loads(stream.read() if stream is not None else b"")
        except NotStrictJson:
            raise ParseError("the body is not strict JSON") from None


# DRF's default parsers with the JSON one made strict: for every view that reads a request body.
API_PARSERS = [StrictJSONParser, FormParser, MultiPartParser]
