from django.urls import path

from inventory import views

app_name = "inventory"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("hosts/register/", views.host_register, name="host_register"),
    path("hosts/<slug:name>/", views.host_detail, name="host_detail"),
    path("hosts/<slug:name>/test-connection/", views.host_test_connection, name="host_test_connection"),
    path("hosts/<slug:name>/sync/", views.host_sync, name="host_sync"),
    path("vms/", views.vm_list, name="vm_list"),
    path("vms/<uuid:uuid>/", views.vm_detail, name="vm_detail"),
    path("vms/<uuid:uuid>/team/", views.vm_assign_team, name="vm_assign_team"),
    path("vms/<uuid:uuid>/group/", views.vm_set_group, name="vm_set_group"),
]
