from django.http import HttpRequest

from migrations_app.services.notifications import unread_count


def notifications(request: HttpRequest) -> dict[str, object]:
    """The unread count in the header (one query per page, lazily: only if the template uses it)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"unread_notifications": lambda: unread_count(user)}
