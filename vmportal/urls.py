from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from migrations_app import workflow_views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("plans/", include("migrations_app.urls")),
    path("manage/", include("vmportal.manage_urls")),
    path("notifications/", workflow_views.notification_list, name="notifications"),
    path("notifications/read/", workflow_views.notifications_read, name="notifications_read"),
    path("audit-log/", workflow_views.audit_log, name="audit_log"),
    path("", include("inventory.urls")),
]
