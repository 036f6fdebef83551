"""Errors the media server answers with, in the codes and wording of Kurento Media Server 7.

Every failure a client can cause is raised as a `KurentoError`; the session layer turns it into a
JSON-RPC error object `{"code", "message", "data": {"type"}}` and the connection keeps working.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from .limits import MAX_ERROR_MESSAGE


class Code(IntEnum):
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    MISSING_OBJECT = -32000
    MARSHALL_ERROR = 40001
    UNEXPECTED_ERROR = 40003
    CONNECT_ERROR = 40004
    UNSUPPORTED_MEDIA_TYPE = 40005
    NOT_IMPLEMENTED = 40006
    INVALID_SESSION = 40007
    MALFORMED_TRANSACTION = 40008
    NOT_ENOUGH_RESOURCES = 40009
    MEDIA_OBJECT_TYPE_NOT_FOUND = 40100
    MEDIA_OBJECT_NOT_FOUND = 40101
    MEDIA_OBJECT_CONSTRUCTOR_NOT_FOUND = 40104
    MEDIA_OBJECT_METHOD_NOT_FOUND = 40105
    MEDIA_OBJECT_EVENT_NOT_SUPPORTED = 40106
    MEDIA_OBJECT_ILLEGAL_PARAM_ERROR = 40107
    MEDIA_OBJECT_NOT_AVAILABLE = 40108
    MEDIA_OBJECT_TAG_KEY_NOT_FOUND = 40110
    MEDIA_OBJECT_OPERATION_NOT_SUPPORTED = 40111
    SDP_CREATE_ERROR = 40200
    SDP_PARSE_ERROR = 40201
    SDP_END_POINT_NO_LOCAL_SDP_ERROR = 40202
    SDP_END_POINT_NO_REMOTE_SDP_ERROR = 40203
    SDP_END_POINT_GENERATE_OFFER_ERROR = 40204
    SDP_END_POINT_PROCESS_OFFER_ERROR = 40205
    SDP_END_POINT_PROCESS_ANSWER_ERROR = 40206
    SDP_CONFIGURATION_ERROR = 40207
    SDP_END_POINT_ALREADY_NEGOTIATED = 40208
    SDP_END_POINT_NOT_OFFER_GENERATED = 40209
    SDP_END_POINT_ANSWER_ALREADY_PROCCESED = 40210
    SDP_END_POINT_CANNOT_CREATE_SESSON = 40211
    ICE_GATHER_CANDIDATES_ERROR = 40400
    ICE_ADD_CANDIDATE_ERROR = 40401
    SERVER_MANAGER_ERROR_KMD_NOT_FOUND = 40500
    PLAYER_SEEK_FAIL = 40700


# The `data.type` KMS sends with the JSON-RPC level codes.
_JSONRPC_TYPES = {
    Code.PARSE_ERROR: "PARSE_ERROR",
    Code.INVALID_REQUEST: "INVALID_REQUEST",
    Code.METHOD_NOT_FOUND: "METHOD_NOT_FOUND",
    Code.INVALID_PARAMS: "INVALID_PARAMS",
    Code.INTERNAL_ERROR: "INTERNAL_ERROR",
    Code.MISSING_OBJECT: "INVALID_PARAMS",
}


class KurentoError(Exception):
    """A failure reported to the client as a JSON-RPC error object."""

    def __init__(self, code: Code, message: str) -> None:
        if len(message) > MAX_ERROR_MESSAGE:  # a message may quote a huge request value
            message = message[: MAX_ERROR_MESSAGE - 1] + "…"
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def type(self) -> str:
        return _JSONRPC_TYPES.get(self.code, self.code.name)

    def to_json(self) -> dict[str, Any]:
        return {"code": int(self.code), "message": self.message, "data": {"type": self.type}}


def object_not_found(object_id: object) -> KurentoError:
    return KurentoError(Code.MEDIA_OBJECT_NOT_FOUND, f"Object '{str(object_id)[:200]}' not found")


def too_large(message: str) -> KurentoError:
    """A value past one of the size limits (limits.py)."""
    return KurentoError(Code.INVALID_PARAMS, message)


def too_many(message: str) -> KurentoError:
    """Past one of the count limits (limits.py)."""
    return KurentoError(Code.NOT_ENOUGH_RESOURCES, message)


def invalid_params(message: str) -> KurentoError:
    """A well-formed parameter value the operation refuses (a bad TURN URL, say)."""
    return KurentoError(Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR, message)


def marshall_error(message: str) -> KurentoError:
    """A parameter missing, of the wrong JSON type or not a value of its enum: KMS's generated
    code refuses these while it unmarshals the request, with 40001."""
    return KurentoError(Code.MARSHALL_ERROR, message)


def factory_not_found(type_name: object) -> KurentoError:
    # KMS's module manager: no factory (unknown or abstract class) is "not available", 40108.
    return KurentoError(Code.MEDIA_OBJECT_NOT_AVAILABLE, f"Factory '{type_name}' not found")


def method_not_found(operation: str, param_count: int) -> KurentoError:
    # KMS's generated dispatch answers an unknown operation with 40008 and this wording.
    return KurentoError(
        Code.MALFORMED_TRANSACTION, f"Method '{operation}' with {param_count} parameters not found"
    )
