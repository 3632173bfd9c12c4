"""Every API error is JSON: {"error": {"code": stable machine code, "message": words for people,
"fields": {field: [messages]} when a payload was refused}}."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from migrations_app.services.plans import PlanError

CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    415: "unsupported_media_type",
    429: "throttled",
}


class Conflict(exceptions.APIException):
    """The request is well-formed but the rules refuse it in the object's current state."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def _flatten(detail: Any) -> Any:
    if isinstance(detail, list):
        return [_flatten(d) for d in detail]
    if isinstance(detail, dict):
        return {k: _flatten(v) for k, v in detail.items()}
    return str(detail)


def error_body(status_code: int, message: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code or CODES.get(status_code, "error"), "message": message, **extra}}


def handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    from migrations_app.services.bulk import CSVError

    if isinstance(exc, CSVError):
        rows = [{"line": line, "message": message} for line, message in exc.rows]
        return Response(error_body(400, str(exc), "csv_invalid", rows=rows), status=400)
    if isinstance(exc, PlanError):
        return Response(error_body(409, str(exc), "conflict"), status=409)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("No such object, or it is not one of your teams'.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or "You may not do this.")
    response = exception_handler(exc, context)
    if response is None:
        return None
    assert isinstance(exc, exceptions.APIException)  # noqa: S101
    detail = exc.detail
    if isinstance(detail, dict | list) and response.status_code == 400:
        fields = _flatten(detail if isinstance(detail, dict) else {"non_field_errors": detail})
        first = next(iter(fields.values()), ["Invalid input."])
        message = first[0] if isinstance(first, list) and first else str(first)
        response.data = error_body(400, f"The request was refused: {message}", "invalid", fields=fields)
    else:
        code = getattr(detail, "code", None)
        stable = CODES.get(response.status_code, str(code or "error"))
        response.data = error_body(response.status_code, str(detail), stable)
    return response


def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """The 404 of any URL under /api/ that matches no endpoint."""
    return JsonResponse(error_body(404, "There is no such API endpoint."), status=404)
