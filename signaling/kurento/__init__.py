"""A Kurento Protocol client (JSON-RPC over WebSocket) for KMS 7 and the embedded media server.

No Django imports: the room media service (signaling/media/) is its only user in the product.
"""

from signaling.kurento.client import ConnectionState, KurentoClient, Subscription
from signaling.kurento.errors import (
    IceError,
    InvalidParams,
    InvalidSession,
    KurentoError,
    MediaServerUnavailable,
    MethodNotFound,
    NotEnoughResources,
    ObjectNotFound,
    RequestTimeout,
    SdpError,
    TypeNotFound,
)
from signaling.kurento.objects import (
    MediaElement,
    MediaObject,
    MediaPipeline,
    PlayerEndpoint,
    RecorderEndpoint,
    ServerManager,
    WebRtcEndpoint,
    create_pipeline,
)

__all__ = [
    "ConnectionState",
    "IceError",
    "InvalidParams",
    "InvalidSession",
    "KurentoClient",
    "KurentoError",
    "MediaElement",
    "MediaObject",
    "MediaPipeline",
    "MediaServerUnavailable",
    "MethodNotFound",
    "NotEnoughResources",
    "ObjectNotFound",
    "PlayerEndpoint",
    "RecorderEndpoint",
    "RequestTimeout",
    "SdpError",
    "ServerManager",
    "Subscription",
    "TypeNotFound",
    "WebRtcEndpoint",
    "create_pipeline",
]
