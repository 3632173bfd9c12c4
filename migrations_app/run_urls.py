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

urlpatterns += [
    path("<int:pk>/validation/", run_views.run_validation, name="run_validation"),
    path("<int:pk>/validation.json", run_views.run_validation_json, name="run_validation_json"),
    path("<int:pk>/move-back/", run_views.run_move_back, name="run_move_back"),
    path("probes/vm/<int:vm_id>/", run_views.vm_probes, name="vm_probes"),
    path("probes/<int:pk>/delete/", run_views.probe_delete, name="probe_delete"),
]
