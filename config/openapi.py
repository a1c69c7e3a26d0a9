"""OpenAPI postprocessing: every operation documents the error answers it can give.

Every answer under /api/ that is not a success is `{"error": code, ...}` (config/exception_handler.py,
config/errors.py). Which of them an operation can give does not depend on the operation's code so
much as on the request: a malformed filter or cursor (400, 404 for a stale cursor), no or a bad token
(401), the wrong group (403), an unknown id (404), the rate limit (429), a body that is not JSON (415).
"""

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "a stable, machine-readable code"},
        "detail": {"description": "for people: a message, or the fields that were refused and why"},
        "retry_after": {"type": "integer", "nullable": True, "description": "429 only: seconds to wait"},
    },
    "required": ["error"],
}

_ERRORS = {
    "400": "The request's parameters or body were refused (`detail` says which).",
    "401": "No credentials, or an unknown or expired token.",
    "403": "Authenticated, but the account's groups do not allow this.",
    "404": "No such object, or a cursor that does not exist.",
    "429": "Throttled: see Retry-After.",
}
_BODY_ERRORS = {
    "413": "The body is larger than the limit.",
    "415": "The body is not JSON.",
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}


def error_responses_postprocess(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            errors = {**_ERRORS, **(_BODY_ERRORS if "requestBody" in operation else {})}
            responses = operation.setdefault("responses", {})
            for status, description in errors.items():
                answer = {"description": description, "content": reference}
                if status == "429":
                    answer["headers"] = _RETRY_AFTER
                responses.setdefault(status, answer)
    return result
