"""Creating, checking and revoking personal API tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from api.models import ApiToken
from migrations_app.services import auditlog

PREFIX = "vmp_"
MAX_ACTIVE_TOKENS = 20
#: `last_used_at` is written at most this often per token (not on every request)
TOUCH_EVERY = timedelta(minutes=1)


class TokenError(ValueError):
    pass


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(user: Any, name: str) -> tuple[ApiToken, str]:
    """A new token for `user`; returns it and its secret (never stored, shown once)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise TokenError("Give the token a name of 1 to 100 characters (e.g. the script that uses it).")
    if ApiToken.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_ACTIVE_TOKENS:
        raise TokenError(f"You have {MAX_ACTIVE_TOKENS} active tokens; revoke one first.")
    secret = PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name, prefix=secret[: len(PREFIX) + 6], digest=digest(secret))
        auditlog.record(user, "token.create", token, after={"name": name, "prefix": token.prefix})
    return token, secret


def revoke(user: Any, token: ApiToken) -> None:
    if token.user_id != user.pk:
        raise TokenError("This is not your token.")
    if token.revoked_at is not None:
        return
    with transaction.atomic():
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        auditlog.record(user, "token.revoke", token, after={"name": token.name, "prefix": token.prefix})


def authenticate(secret: str) -> ApiToken | None:
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=digest(secret), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is not None:
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token
