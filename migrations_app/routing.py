"""Websocket routes of the live pages (wrapped in origin validation and session auth in vmportal.asgi)."""

from django.urls import path

from migrations_app import consumers

websocket_urlpatterns = [
    path("ws/fleet/", consumers.FleetConsumer.as_asgi(), name="ws_fleet"),
    path("ws/plans/<int:plan_id>/", consumers.PlanConsumer.as_asgi(), name="ws_plan"),
    path("ws/runs/<int:run_id>/", consumers.RunConsumer.as_asgi(), name="ws_run"),
]
