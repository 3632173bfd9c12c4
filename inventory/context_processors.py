from django.http import HttpRequest

from inventory.permissions import is_admin, is_auditor, sees_everything


def roles(request: HttpRequest) -> dict[str, bool]:
    """Role flags for templates; the permission checks themselves live in views and services."""
    user = request.user
    return {
        "user_is_admin": is_admin(user),
        "user_is_auditor": is_auditor(user),
        # infrastructure details (URIs, key paths, raw libvirt errors, pool paths) are not for app owners
        "user_sees_everything": sees_everything(user),
    }
