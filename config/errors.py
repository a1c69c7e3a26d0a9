"""One error shape on /webhooks/ and /api/: `{"error": code}` JSON, never an HTML page.

Django answers some errors before any view runs (an unknown URL, a bad Host header, a CSRF failure,
an uncaught exception) and, under DEBUG, with its technical pages, which bypass the handler404/500
below and list a failing frame's local variables: request bodies and signing secrets. The
middleware replaces any non-JSON error answer on these paths, so not even DEBUG can show one; the
handlers keep production from rendering the HTML in the first place. The admin and the public pages
keep Django's HTML.
"""

from http import HTTPStatus

from django.http import JsonResponse
from django.views import defaults

JSON_PREFIXES = ("/webhooks/", "/api/")
# Headers an error answer carries for the client's benefit, kept when the body is replaced.
_KEPT_HEADERS = ("Allow", "Retry-After")


def _is_json_path(request) -> bool:
    path = request.path_info
    return path.startswith(JSON_PREFIXES) or path in ("/webhooks", "/api")


def error_code(request, status: int) -> str:
    if status == 404:
        # Under /webhooks/ every path that does not resolve names an endpoint that does not exist.
        return "unknown_endpoint" if request.path_info.startswith("/webhooks") else "not_found"
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "error"
    return {400: "bad_request", 500: "server_error"}.get(status) or phrase.lower().replace(" ", "_").replace("-", "_")


def error_response(request, status: int) -> JsonResponse:
    return JsonResponse({"error": error_code(request, status)}, status=status)


class JsonErrorMiddleware:
    """Outermost middleware: every error answer under /webhooks/ and /api/ leaves as JSON."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and _is_json_path(request)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            replaced = error_response(request, response.status_code)
            for header in _KEPT_HEADERS:
                if header in response:
                    replaced[header] = response[header]
            return replaced
        return response


def bad_request(request, exception):
    if _is_json_path(request):
        return error_response(request, 400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception):
    if _is_json_path(request):
        return error_response(request, 403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception):
    if _is_json_path(request):
        return error_response(request, 404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_json_path(request):
        return error_response(request, 500)
    return defaults.server_error(request)
