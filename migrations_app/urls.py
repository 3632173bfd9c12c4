from django.urls import path

from migrations_app import views, workflow_views

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
    path("<int:pk>/again/", views.plan_again, name="plan_again"),
    path("<int:pk>/decide/", workflow_views.plan_decide, name="plan_decide"),
    path("<int:pk>/emergency/", workflow_views.plan_emergency, name="plan_emergency"),
    path("<int:pk>/review/", workflow_views.plan_review, name="plan_review"),
    path("approvals/", workflow_views.approval_queue, name="approval_queue"),
]
