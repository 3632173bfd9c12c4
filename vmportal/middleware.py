"""Request context for the audit log: services take no request objects, so the source address of the
request that caused a change reaches `migrations_app.services.auditlog.record` through a context variable."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from migrations_app.services.auditlog import client_address, source_address


class AuditContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = source_address.set(client_address(request))
        try:
            return self.get_response(request)
        finally:
            source_address.reset(token)
