"""Logins: the rate limit (django-axes) and the audit-log rows of logins, failed logins and lock-outs."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from migrations_app.services import auditlog


class LoginRateLimitBackend(AxesStandaloneBackend):
    """django-axes' lock-out check for every login that comes with a request (the login page, the admin's).

    A login without a request is not a password typed into a page (the test client, a management command),
    so there is nothing to rate-limit and the check is left out instead of failing.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)  # type: ignore[arg-type]


def _address(request: HttpRequest | None) -> str | None:
    return auditlog.client_address(request) if request is not None else None


@receiver(user_logged_in, dispatch_uid="vmportal-auditlog-login")
def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    auditlog.record_event(user, "auth.login", "user", user.get_username(), source=_address(request))


@receiver(user_login_failed, dispatch_uid="vmportal-auditlog-login-failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any) -> None:
    name = str(credentials.get("username", ""))[:150]
    locked = bool(getattr(request, "axes_locked_out", False))
    auditlog.record_event(
        None,
        "auth.login_failed",
        "user",
        name,
        after={"refused because locked out": locked},
        source=_address(request),
    )


@receiver(user_locked_out, dispatch_uid="vmportal-auditlog-locked-out")
def _locked_out(
    sender: Any, request: HttpRequest | None, username: str | None, ip_address: str | None, **kw: Any
) -> None:
    from django.conf import settings
    from django.utils import timezone

    from migrations_app.models import AuditLogEntry

    # django-axes signals again at every attempt during the lock-out; those attempts are logged as
    # failed logins "refused because locked out", the lock-out itself once
    cooloff = timezone.now() - settings.AXES_COOLOFF_TIME
    name = (username or "")[:150]
    if AuditLogEntry.objects.filter(
        verb="auth.locked_out", target_id=name, source_address=ip_address, at__gte=cooloff
    ).exists():
        return
    auditlog.record_event(
        None,
        "auth.locked_out",
        "user",
        name,
        after={
            "failures": settings.AXES_FAILURE_LIMIT,
            "locked for minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
        },
        source=ip_address,
    )
