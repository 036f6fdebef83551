"""Limits on what one client can make the media server hold.

Each bounds memory or work that a buggy or hostile client could otherwise grow without end
(a fuzzer found every one of them). Going past a size limit is answered with -32602 (invalid
params), past a count limit with 40009 (NOT_ENOUGH_RESOURCES); either way the socket stays open
and nothing already held is touched. The values leave room for real use: a 50-person room has
about 2,500 endpoints in its pipeline, a browser sends a dozen ICE candidates per endpoint.
docs/mediaserver.md lists them for operators.
"""

from __future__ import annotations

# -- requests ---------------------------------------------------------------------------------
MAX_NESTING_DEPTH = 64  # arrays and objects inside one another in one request
MAX_TRANSACTION_OPERATIONS = 1_000
MAX_ERROR_MESSAGE = 1_000  # characters of an error message (they may quote the request)

# -- sessions -----------------------------------------------------------------------------------
MAX_SESSION_ID = 64  # characters
MAX_SESSIONS_PER_CONNECTION = 16  # live sessions one socket has created
MAX_OBJECTS_PER_SESSION = 10_000
MAX_SUBSCRIPTIONS_PER_SESSION = 20_000
MAX_CACHED_RESPONSES = 256  # per session, each kept RESPONSE_CACHE_SECONDS (sessions.py)
MAX_CACHED_RESPONSE_BYTES = 256 * 1024  # a larger response is not kept for retries
MAX_CACHE_BYTES = 2 * 1024 * 1024  # all the responses one session keeps

# -- objects ------------------------------------------------------------------------------------
MAX_ELEMENTS_PER_PIPELINE = 5_000
MAX_TAGS = 64  # per object
MAX_TAG_KEY = 256  # characters
MAX_TAG_VALUE = 4_096  # characters
MAX_PROPERTY_BYTES = 16 * 1024  # one property value, as JSON

# -- WebRtcEndpoint -----------------------------------------------------------------------------
MAX_REMOTE_CANDIDATES = 100  # ICE candidates added to one endpoint, queued or not
MAX_CANDIDATE_LENGTH = 1_024  # characters of one candidate line
MAX_SDP_MID = 64  # characters of a candidate's sdpMid

# -- WebRtcEndpoint data channels (data_channels.py) ---------------------------------------------
MAX_DATA_MESSAGE_BYTES = 262_144  # one message either way (what aiortc announces it takes)
MAX_DATA_BUFFERED_BYTES = 1_048_576  # queued towards the peer; a message past it is dropped
MAX_DATA_CHANNEL_LABEL = 1_024  # characters of a label or protocol
MAX_DATA_CHANNELS = 64  # channels one endpoint keeps at once (KMS wires one, closes the rest)
