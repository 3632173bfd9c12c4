from django.urls import path

from migrations_app import run_views

app_name = "runs"

urlpatterns = [
    path("", run_views.run_history, name="history"),
    path("export.csv", run_views.run_export, {"fmt": "csv"}, name="export_csv"),
    path("export.json", run_views.run_export, {"fmt": "json"}, name="export_json"),
    path("<int:pk>/", run_views.run_detail, name="run_detail"),
    path("<int:pk>/cancel/", run_views.run_cancel, name="run_cancel"),
]
