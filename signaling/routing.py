"""WebSocket URL routes: the room socket, and the pre-join connection test's socket. The inbound
limits apply to both as frames arrive, before the consumer sees them (signaling.inbound)."""

from django.urls import re_path

from signaling.connection_test import ConnectionTestConsumer
from signaling.consumers import RoomConsumer
from signaling.inbound import InboundLimits

websocket_urlpatterns = [
    re_path(r"^ws/rooms/(?P<slug>[-a-zA-Z0-9_]+)/$", InboundLimits(RoomConsumer.as_asgi())),
    re_path(r"^ws/connection-test/$", InboundLimits(ConnectionTestConsumer.as_asgi())),
]
