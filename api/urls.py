from django.urls import include, path
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiYamlRenderer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from api import errors, views

router = SimpleRouter()
router.register("hosts", views.HostViewSet, basename="host")
router.register("vms", views.VMViewSet, basename="vm")
router.register("plans", views.PlanViewSet, basename="plan")
router.register("runs", views.RunViewSet, basename="run")
router.register("backups", views.BackupViewSet, basename="backup")
router.register("audit-log", views.AuditLogViewSet, basename="auditlog")

app_name = "api"

urlpatterns = [
    # JSON first: errors of the schema view are JSON too
    path(
        "v1/schema/",
        SpectacularAPIView.as_view(renderer_classes=[OpenApiJsonRenderer, OpenApiYamlRenderer]),
        name="schema",
    ),
    path("v1/docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path("v1/", include(router.urls)),
    path("", errors.not_found, name="root"),
    path("<path:rest>", errors.not_found, name="not_found"),
]
