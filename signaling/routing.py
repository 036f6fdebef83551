"""WebSocket URL routes. The room socket's inbound limits apply as frames arrive, before the
consumer sees them (signaling.inbound)."""

from django.urls import re_path

from signaling.consumers import RoomConsumer
from signaling.inbound import InboundLimits

websocket_urlpatterns = [
    re_path(r"^ws/rooms/(?P<slug>[-a-zA-Z0-9_]+)/$", InboundLimits(RoomConsumer.as_asgi())),
]
