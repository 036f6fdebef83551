"""ASGI entry point for daphne: Django views over HTTP, the room signaling over WebSocket.

WebSocket connections carry the Django session (so the user is known) and must come from the
site's own origin (scheme, host and port) or one in CSRF_TRUSTED_ORIGINS, as Django's CSRF check
demands of forms: that stops other sites, and other ports or schemes of this host, from opening
sockets with a visitor's cookies (signaling/origin.py).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conference.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: the consumers import models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from signaling.language import ConnectionLanguage  # noqa: E402
from signaling.origin import SameOriginValidator  # noqa: E402
from signaling.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(
            AuthMiddlewareStack(ConnectionLanguage(URLRouter(websocket_urlpatterns)))
        ),
    }
)
