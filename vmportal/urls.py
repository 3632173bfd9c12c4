from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, include, path
from django_rq.urls import get_admin_urlpatterns, get_api_urlpatterns

from api import account_views
from inventory.permissions import is_admin
from migrations_app import workflow_views


def admins_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The job-queue pages can stop, delete and requeue moves: approvers/admins only, auditors included out."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_admin(request.user):
            raise PermissionDenied("The job queues are for approvers/admins only.")
        return view(request, *args, **kwargs)

    return wrapped


def _queue_pages() -> list[URLPattern]:
    api = [URLPattern(p.pattern, admins_only(p.callback), p.default_args, p.name) for p in get_api_urlpatterns()]
    return api + get_admin_urlpatterns(view_wrapper=admins_only)


urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/rq/", include((_queue_pages(), "django_rq"))),
    path("admin/", admin.site.urls),
    path("plans/", include("migrations_app.urls")),
    path("manage/", include("vmportal.manage_urls")),
    path("notifications/", workflow_views.notification_list, name="notifications"),
    path("notifications/read/", workflow_views.notifications_read, name="notifications_read"),
    path("audit-log/", workflow_views.audit_log, name="audit_log"),
    path("account/tokens/", account_views.token_list, name="account_tokens"),
    path("account/tokens/<int:pk>/revoke/", account_views.token_revoke, name="account_token_revoke"),
    path("api/", include("api.urls")),
    path("runs/", include("migrations_app.run_urls")),
    path("", include("inventory.urls")),
]
