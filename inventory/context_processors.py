from django.http import HttpRequest

from inventory.permissions import is_admin, is_auditor


def roles(request: HttpRequest) -> dict[str, bool]:
    user = request.user
    return {"user_is_admin": is_admin(user), "user_is_auditor": is_auditor(user)}
