from django.urls import path

from migrations_app import views

app_name = "migrations_app"

urlpatterns = [
    path("", views.plan_list, name="plan_list"),
    path("new/", views.plan_create, name="plan_create"),
    path("<int:pk>/", views.plan_detail, name="plan_detail"),
    path("<int:pk>/items/<int:item_id>/", views.plan_update_item, name="plan_update_item"),
    path("<int:pk>/options/", views.plan_update_options, name="plan_update_options"),
    path("<int:pk>/audit/", views.plan_reaudit, name="plan_reaudit"),
    path("<int:pk>/submit/", views.plan_submit, name="plan_submit"),
    path("<int:pk>/cancel/", views.plan_cancel, name="plan_cancel"),
    path("<int:pk>/override/", views.plan_override, name="plan_override"),
]
