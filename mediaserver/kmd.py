"""The KMD (Kurento Module Descriptor) of each module, made from this server's own classes.

KMS answers `ServerManager.getKmd(moduleName)` with the JSON interface description its module was
built from. This server has no such files: it describes what it implements, in the same JSON shape
(name, version, kurentoVersion, code, remoteClasses, complexTypes, events). Classes, their parents,
constructors, properties, operations and events come from the registered classes themselves;
the complex types and event payloads are listed below, once: all of KMS 7's, those this server
never sends included (the RTC*Stats of transports and candidates, CodecConfiguration...), so a
client reading the KMD finds what it would find in KMS's. tests/mediaserver/test_kmd.py holds
KMS 7's list of names and checks the KMD against it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable
from typing import Any

from .objects import MediaObject, Property

KMD_MODULES = ("core", "elements", "filters")

# Operation parameters whose Python annotation does not name their Kurento type.
_PARAM_TYPES = {
    "mediaType": "MediaType",
    "details": "GstreamerDotDetails",
    "candidate": "IceCandidate",
    "options": "OfferOptions",
}
_METHOD_PARAM_TYPES = {
    ("connect", "media"): "MediaType",  # Mixer's
    ("disconnect", "media"): "MediaType",
    ("setAudioFormat", "caps"): "AudioCaps",
    ("setVideoFormat", "caps"): "VideoCaps",
}
_RETURN_TYPES = {
    "getSourceConnections": "ElementConnectionData[]",
    "getSinkConnections": "ElementConnectionData[]",
    "getTags": "Tag[]",
    "getStats": "Stats<>",
    "getUsedMemory": "int64",
}
_PYTHON_TYPES: dict[Any, str] = {str: "String", int: "int", float: "float", bool: "boolean"}
_ALIASES = frozenset({"getChilds"})  # 6.x spellings the server answers but KMS 7 does not list

# Events and complex types per module, as "field:Type" ("?" after an optional field's name).
_EVENTS: dict[str, dict[str, tuple[str | None, tuple[str, ...]]]] = {
    "core": {
        "RaiseBase": (None, ("source:MediaObject", "timestampMillis:String", "tags:Tag[]")),
        "Error": ("RaiseBase", ("description:String", "errorCode:int", "type:String")),
        "Media": ("RaiseBase", ("type:String",)),
        "ObjectCreated": ("RaiseBase", ("object:MediaObject",)),
        "ObjectDestroyed": ("RaiseBase", ("objectId:String",)),
        "MediaSessionStarted": ("Media", ()),
        "MediaSessionTerminated": ("Media", ()),
        "MediaStateChanged": ("Media", ("oldState:MediaState", "newState:MediaState")),
        "ConnectionStateChanged": (
            "Media",
            ("oldState:ConnectionState", "newState:ConnectionState"),
        ),
        "MediaFlowOutStateChanged": (
            "Media",
            ("state:MediaFlowState", "padName:String", "mediaType:MediaType"),
        ),
        "MediaFlowInStateChanged": (
            "Media",
            ("state:MediaFlowState", "padName:String", "mediaType:MediaType"),
        ),
        "MediaTranscodingStateChanged": (
            "Media",
            ("state:MediaTranscodingState", "binName:String", "mediaType:MediaType"),
        ),
        "ElementConnected": (
            "Media",
            (
                "sink:MediaElement",
                "mediaType:MediaType",
                "sourceMediaDescription:String",
                "sinkMediaDescription:String",
            ),
        ),
        "ElementDisconnected": (
            "Media",
            (
                "sink:MediaElement",
                "mediaType:MediaType",
                "sourceMediaDescription:String",
                "sinkMediaDescription:String",
            ),
        ),
        "UriEndpointStateChanged": ("Media", ("state:UriEndpointState",)),
    },
    "elements": {
        "EndOfStream": ("Media", ()),
        "Recording": ("Media", ()),
        "Paused": ("Media", ()),
        "Stopped": ("Media", ()),
        "IceCandidateFound": ("Media", ("candidate:IceCandidate",)),
        "IceGatheringDone": ("Media", ()),
        "IceComponentStateChanged": (
            "Media",
            ("streamId:int", "componentId:int", "state:IceComponentState"),
        ),
        "DtlsConnectionStateChange": (
            "Media",
            (
                "streamId:String",
                "componentId:String",
                "connectionId:String",
                "state:DtlsConnectionState",
            ),
        ),
        "DataChannelOpened": ("Media", ("channelId:int",)),
        "DataChannelClosed": ("Media", ("channelId:int",)),
        "NewCandidatePairSelected": ("Media", ("candidatePair:IceCandidatePair",)),
        "OnKeySoftLimit": ("Media", ("mediaType:MediaType",)),
    },
    "filters": {
        "CodeFound": ("Media", ("codeType:String", "value:String")),
    },
}

_ENUMS: dict[str, dict[str, tuple[str, ...]]] = {
    "core": {
        "MediaState": ("DISCONNECTED", "CONNECTED"),
        "ConnectionState": ("DISCONNECTED", "CONNECTED"),
        "MediaFlowState": ("FLOWING", "NOT_FLOWING"),
        "MediaTranscodingState": ("TRANSCODING", "NOT_TRANSCODING"),
        "MediaType": ("AUDIO", "DATA", "VIDEO"),
        "UriEndpointState": ("STOP", "START", "PAUSE"),
        "ServerType": ("KMS", "KCS"),
        "GstreamerDotDetails": (
            "SHOW_MEDIA_TYPE",
            "SHOW_CAPS_DETAILS",
            "SHOW_NON_DEFAULT_PARAMS",
            "SHOW_STATES",
            "SHOW_FULL_PARAMS",
            "SHOW_ALL",
            "SHOW_VERBOSE",
        ),
        "FilterType": ("AUDIO", "AUTODETECT", "VIDEO"),
        "AudioCodec": ("OPUS", "PCMU", "PCMA", "RAW"),
        "VideoCodec": ("H265", "AV1", "VP9", "VP8", "H264", "RAW"),
        "StatsType": (
            "inboundrtp",
            "outboundrtp",
            "session",
            "datachannel",
            "track",
            "transport",
            "candidatepair",
            "localcandidate",
            "remotecandidate",
            "element",
            "endpoint",
        ),
        "RTCDataChannelState": ("connecting", "open", "closing", "closed"),
        "RTCStatsIceCandidateType": ("host", "serverreflexive", "peerreflexive", "relayed"),
        "RTCStatsIceCandidatePairState": (
            "frozen",
            "waiting",
            "inprogress",
            "failed",
            "succeeded",
            "cancelled",
        ),
    },
    "elements": {
        "IceComponentState": (
            "DISCONNECTED",
            "GATHERING",
            "CONNECTING",
            "CONNECTED",
            "READY",
            "FAILED",
        ),
        "DtlsConnectionState": ("NEW", "CLOSED", "FAILED", "CONNECTING", "CONNECTED"),
        "CryptoSuite": (
            "AES_128_CM_HMAC_SHA1_32",
            "AES_128_CM_HMAC_SHA1_80",
            "AES_256_CM_HMAC_SHA1_32",
            "AES_256_CM_HMAC_SHA1_80",
        ),
        "MediaProfileSpecType": (
            "WEBM",
            "MKV",
            "MP4",
            "WEBM_VIDEO_ONLY",
            "WEBM_AUDIO_ONLY",
            "MKV_VIDEO_ONLY",
            "MKV_AUDIO_ONLY",
            "MP4_VIDEO_ONLY",
            "MP4_AUDIO_ONLY",
            "JPEG_VIDEO_ONLY",
            "KURENTO_SPLIT_RECORDER",
            "FLV",
        ),
        "GapsFixMethod": ("NONE", "GENPTS", "FILL_IF_TRANSCODING"),
        "CertificateKeyType": ("RSA", "ECDSA"),
        "DSCPValue": (
            "NO_DSCP",
            "NO_VALUE",
            "AUDIO_VERYLOW",
            "AUDIO_LOW",
            "AUDIO_MEDIUM",
            "AUDIO_HIGH",
            "VIDEO_VERYLOW",
            "VIDEO_LOW",
            "VIDEO_MEDIUM",
            "VIDEO_MEDIUM_THROUGHPUT",
            "VIDEO_HIGH",
            "VIDEO_HIGH_THROUGHPUT",
            "DATA_VERYLOW",
            "DATA_LOW",
            "DATA_MEDIUM",
            "DATA_HIGH",
            "CHROME_HIGH",
            "CHROME_MEDIUM",
            "CHROME_LOW",
            "CHROME_VERYLOW",
            "CS0",
            "CS1",
            "CS2",
            "CS3",
            "CS4",
            "CS5",
            "CS6",
            "CS7",
            "AF11",
            "AF12",
            "AF13",
            "AF21",
            "AF22",
            "AF23",
            "AF31",
            "AF32",
            "AF33",
            "AF41",
            "AF42",
            "AF43",
            "EF",
            "VOICEADMIT",
            "LE",
        ),
    },
    "filters": {},
}

_RTP_STREAM = (
    "ssrc:String",
    "associateStatsId:String",
    "isRemote:boolean",
    "mediaTrackId:String",
    "transportId:String",
    "codecId:String",
    "firCount:int64",
    "pliCount:int64",
    "nackCount:int64",
    "sliCount:int64",
    "remb:int64",
    "packetsLost:int64",
    "fractionLost:double",
)
_REGISTERS: dict[str, dict[str, tuple[str | None, tuple[str, ...]]]] = {
    "core": {
        "ServerInfo": (
            None,
            ("version:String", "modules:ModuleInfo[]", "type:ServerType", "capabilities:String[]"),
        ),
        "ModuleInfo": (
            None,
            ("version:String", "name:String", "generationTime:String", "factories:String[]"),
        ),
        "Tag": (None, ("key:String", "value:String")),
        "ElementConnectionData": (
            None,
            (
                "source:MediaElement",
                "sink:MediaElement",
                "type:MediaType",
                "sourceDescription:String",
                "sinkDescription:String",
            ),
        ),
        "Fraction": (None, ("numerator:int", "denominator:int")),
        "AudioCaps": (None, ("codec:AudioCodec", "bitrate:int")),
        "VideoCaps": (None, ("codec:VideoCodec", "framerate:Fraction")),
        "RembParams": (
            None,
            (
                "packetsRecvIntervalTop?:int",
                "exponentialFactor?:float",
                "linealFactorMin?:int",
                "linealFactorGrade?:float",
                "decrementFactor?:float",
                "thresholdFactor?:float",
                "upLosses?:int",
                "rembOnConnect?:int",
            ),
        ),
        "OfferOptions": (None, ("offerToReceiveAudio?:boolean", "offerToReceiveVideo?:boolean")),
        "MediaLatencyStat": (None, ("name:String", "type:MediaType", "avg:double")),
        "Stats": (None, ("id:String", "type:StatsType", "timestampMillis:int64")),
        "ElementStats": ("Stats", ("inputLatency:MediaLatencyStat[]",)),
        "EndpointStats": ("ElementStats", ("E2ELatency:MediaLatencyStat[]",)),
        "RTCStats": ("Stats", ()),
        "RTCRTPStreamStats": ("RTCStats", _RTP_STREAM),
        "RTCInboundRTPStreamStats": (
            "RTCRTPStreamStats",
            ("packetsReceived:int64", "bytesReceived:int64", "jitter:double"),
        ),
        "RTCOutboundRTPStreamStats": (
            "RTCRTPStreamStats",
            (
                "packetsSent:int64",
                "bytesSent:int64",
                "targetBitrate:double",
                "roundTripTime:double",
            ),
        ),
        "RTCCodec": (
            "RTCStats",
            (
                "payloadType:int64",
                "codec:String",
                "clockRate:int64",
                "channels:int64",
                "parameters:String",
            ),
        ),
        "RTCPeerConnectionStats": (
            "RTCStats",
            ("dataChannelsOpened:int64", "dataChannelsClosed:int64"),
        ),
        "RTCMediaStreamStats": ("RTCStats", ("streamIdentifier:String", "trackIds:String[]")),
        "RTCMediaStreamTrackStats": (
            "RTCStats",
            (
                "trackIdentifier:String",
                "remoteSource:boolean",
                "ssrcIds:String[]",
                "frameWidth:int64",
                "frameHeight:int64",
                "framesPerSecond:double",
                "framesSent:int64",
                "framesReceived:int64",
                "framesDecoded:int64",
                "framesDropped:int64",
                "framesCorrupted:int64",
                "audioLevel:double",
                "echoReturnLoss:double",
                "echoReturnLossEnhancement:double",
            ),
        ),
        "RTCDataChannelStats": (
            "RTCStats",
            (
                "label:String",
                "protocol:String",
                "datachannelid:int64",
                "state:RTCDataChannelState",
                "messagesSent:int64",
                "bytesSent:int64",
                "messagesReceived:int64",
                "bytesReceived:int64",
            ),
        ),
        "RTCTransportStats": (
            "RTCStats",
            (
                "bytesSent:int64",
                "bytesReceived:int64",
                "rtcpTransportStatsId:String",
                "activeConnection:boolean",
                "selectedCandidatePairId:String",
                "localCertificateId:String",
                "remoteCertificateId:String",
            ),
        ),
        "RTCIceCandidateAttributes": (
            "RTCStats",
            (
                "ipAddress:String",
                "portNumber:int64",
                "transport:String",
                "candidateType:RTCStatsIceCandidateType",
                "priority:int64",
                "addressSourceUrl:String",
            ),
        ),
        "RTCIceCandidatePairStats": (
            "RTCStats",
            (
                "transportId:String",
                "localCandidateId:String",
                "remoteCandidateId:String",
                "state:RTCStatsIceCandidatePairState",
                "priority:int64",
                "nominated:boolean",
                "writable:boolean",
                "readable:boolean",
                "bytesSent:int64",
                "bytesReceived:int64",
                "roundTripTime:double",
                "availableOutgoingBitrate:double",
                "availableIncomingBitrate:double",
            ),
        ),
        "RTCCertificateStats": (
            "RTCStats",
            (
                "fingerprint:String",
                "fingerprintAlgorithm:String",
                "base64Certificate:String",
                "issuerCertificateId:String",
            ),
        ),
        "CodecConfiguration": (None, ("name?:String", "properties?:String<>")),
    },
    "elements": {
        "VideoInfo": (
            None,
            ("isSeekable:boolean", "seekableInit:int64", "seekableEnd:int64", "duration:int64"),
        ),
        "IceCandidate": (None, ("candidate:String", "sdpMid:String", "sdpMLineIndex:int")),
        "SDES": (None, ("key?:String", "keyBase64?:String", "crypto?:CryptoSuite")),
        "IceCandidatePair": (
            None,
            (
                "streamId:String",
                "componentId:int",
                "localCandidate:String",
                "remoteCandidate:String",
            ),
        ),
        "IceConnection": (
            None,
            ("streamId:String", "componentId:int", "state:IceComponentState"),
        ),
        "DtlsConnection": (
            None,
            (
                "streamId:String",
                "componentId:String",
                "connectionId:String",
                "state:DtlsConnectionState",
            ),
        ),
    },
    "filters": {},
}


def module_descriptor(
    name: str, version: str, classes: Iterable[type[MediaObject]]
) -> dict[str, Any] | None:
    """The KMD of module `name` for these classes (and the classes they derive from), or None
    for a module this server does not have."""
    if name not in KMD_MODULES:
        return None
    every: dict[str, type[MediaObject]] = {}
    for cls in classes:
        for base in cls.__mro__:
            if isinstance(base, type) and issubclass(base, MediaObject) and base.is_kurento_class():
                every.setdefault(base.TYPE, base)
    own = sorted(
        (cls for cls in every.values() if name == cls.MODULE_NAME), key=lambda c: len(c.__mro__)
    )
    return {
        "name": name,
        "version": version,
        "kurentoVersion": f"^{version}",
        "code": {"api": {"js": {"nodeName": f"kurento-client-{name}"}}},
        "remoteClasses": [_remote_class(cls) for cls in own],
        "complexTypes": [
            *(
                {"typeFormat": "ENUM", "name": n, "values": list(v)}
                for n, v in _ENUMS[name].items()
            ),
            *(
                _with_parent({"typeFormat": "REGISTER", "name": n}, parent, fields)
                for n, (parent, fields) in _REGISTERS[name].items()
            ),
        ],
        "events": [
            _with_parent({"name": n}, parent, fields)
            for n, (parent, fields) in _EVENTS[name].items()
        ],
    }


def _with_parent(entry: dict[str, Any], parent: str | None, fields: tuple[str, ...]) -> dict:
    if parent is not None:
        entry["extends"] = parent
    entry["properties"] = [_field(f) for f in fields]
    return entry


def _field(spec: str) -> dict[str, Any]:
    name, type_name = spec.split(":", 1)
    if name.endswith("?"):
        return {"name": name[:-1], "type": type_name, "optional": True}
    return {"name": name, "type": type_name}


def _remote_class(cls: type[MediaObject]) -> dict[str, Any]:
    parent = next(
        (
            b
            for b in cls.__mro__[1:]
            if issubclass(b, MediaObject) and b.is_kurento_class() and b.TYPE != cls.TYPE
        ),
        None,
    )
    entry: dict[str, Any] = {"name": cls.TYPE}
    if cls.ABSTRACT:
        entry["abstract"] = True
    if parent is not None:
        entry["extends"] = parent.TYPE
    if not cls.ABSTRACT:
        entry["constructor"] = {
            "params": [
                {"name": p.name, "type": p.type_name, **({"optional": True} if p.optional else {})}
                for p in cls.CONSTRUCTOR
            ]
        }
    own_properties = cls.__dict__.get("PROPERTIES", ())
    entry["properties"] = [_property(p) for p in own_properties]
    entry["methods"] = _methods(cls)
    entry["events"] = sorted(cls.__dict__.get("EVENTS", ()))
    return entry


def _property(prop: Property) -> dict[str, Any]:
    entry = {"name": prop.name, "type": prop.type_name or _PYTHON_TYPES.get(prop.kind, "String")}
    if prop.final:
        entry["final"] = True
    elif prop.read_only:
        entry["readOnly"] = True
    return entry


def _methods(cls: type[MediaObject]) -> list[dict[str, Any]]:
    """The operations the class itself defines, less the getters and setters of properties and
    the overrides of an inherited operation (the parent class already lists them)."""
    accessors = {f"{verb}{name}" for name in cls.properties() for verb in ("get", "set")}
    methods = []
    for attribute, function in cls.__dict__.items():
        operation = attribute.removeprefix("op_")
        if (
            not attribute.startswith("op_")
            or operation.lower() in accessors
            or operation in _ALIASES
            or _overrides(cls, attribute, function)
        ):
            continue
        hints = typing.get_type_hints(function)
        params = []
        for name, parameter in inspect.signature(function).parameters.items():
            if name == "self":
                continue
            param: dict[str, Any] = {
                "name": name,
                "type": _METHOD_PARAM_TYPES.get((operation, name))
                or _PARAM_TYPES.get(name)
                or _type_name(hints.get(name)),
            }
            if parameter.default is not inspect.Parameter.empty:
                param["optional"] = True
            params.append(param)
        method: dict[str, Any] = {"name": operation, "params": params}
        returns = _RETURN_TYPES.get(operation) or _type_name(hints.get("return"))
        if returns:
            method["return"] = {"type": returns}
        methods.append(method)
    return methods


def _overrides(cls: type[MediaObject], attribute: str, function: Any) -> bool:
    """Whether a class further up defines the same operation with the same parameters (a
    Dispatcher's connect(source, sink) is its own operation, not MediaElement's)."""
    inherited = next(
        (b.__dict__[attribute] for b in cls.__mro__[1:] if attribute in b.__dict__), None
    )
    return inherited is not None and list(inspect.signature(inherited).parameters) == list(
        inspect.signature(function).parameters
    )


def _type_name(annotation: Any) -> str:
    """The Kurento type of a plain annotation ("" for none): optional values count as their
    type, a media object as its class."""
    if annotation is None or annotation is type(None):
        return ""
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    if options and typing.get_origin(annotation) is not list:
        annotation = options[0]
    if isinstance(annotation, type) and issubclass(annotation, MediaObject):
        return annotation.TYPE
    if typing.get_origin(annotation) is list:
        return f"{_type_name(typing.get_args(annotation)[0])}[]"
    return _PYTHON_TYPES.get(annotation, "String")


def enum_values(name: str) -> tuple[str, ...]:
    """The values of a Kurento enum type of any module (empty for an unknown name)."""
    for enums in _ENUMS.values():
        if name in enums:
            return enums[name]
    return ()
