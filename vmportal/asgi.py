"""ASGI entry point: HTTP through Django; websocket routes arrive with the live dashboards."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402  (after Django set-up)

application = ProtocolTypeRouter({"http": django_asgi_app})
