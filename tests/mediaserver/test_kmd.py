"""getKmd against Kurento Media Server 7's own module descriptors (core.kmd.json and the
elements.*.kmd.json files of github.com/Kurento/kurento, server/module-*/src/server/interface).

The reference below is a list of names and types read from those files, one line per item, not a
copy of them: each class with its constructor parameters, properties (RW, RO or final), methods
and events; each complex type with its fields (an enum with its values); each event with its
fields. `?` marks an optional parameter or field. A line indented four spaces continues the one
above it. The server's KMD must list exactly these. With a Kurento checkout (or its git
directory) at $KURENTO_SRC, default /tmp/kurento-src, `python -m tests.mediaserver.test_kmd`
checks the reference itself against KMS's files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .rpc import Rpc
from .test_fidelity import error_of

MANAGER = "manager_ServerManager"

KMS7 = {
    "core": """\
class MediaObject abstract
  prop mediaPipeline:MediaPipeline final
  prop parent:MediaObject final
  prop id:String final
  prop children:MediaObject[] RO
  prop name:String RW
  prop sendTagsInEvents:boolean RW
  prop creationTime:int final
  method addTag(key:String, value:String)
  method removeTag(key:String)
  method getTag(key:String) -> String
  method getTags() -> Tag[]
  events Error
class ServerManager extends MediaObject abstract
  prop info:ServerInfo RO
  prop pipelines:MediaPipeline[] RO
  prop sessions:String[] RO
  prop metadata:String RO
  method getKmd(moduleName:String) -> String
  method getCpuCount() -> int
  method getUsedCpu(interval:int) -> float
  method getUsedMemory() -> int64
  events ObjectCreated, ObjectDestroyed
class SessionEndpoint extends Endpoint abstract
  events MediaSessionTerminated, MediaSessionStarted
class Hub extends MediaObject abstract
  method getGstreamerDot(details:GstreamerDotDetails?) -> String
  method dumpGstreamerDot(details:GstreamerDotDetails?)
class Filter extends MediaElement abstract
class Endpoint extends MediaElement abstract
class HubPort extends MediaElement
  ctor hub:Hub
class PassThrough extends MediaElement
  ctor mediaPipeline:MediaPipeline
class UriEndpoint extends Endpoint abstract
  prop uri:String final
  prop state:UriEndpointState RO
  method pause()
  method stop()
  events UriEndpointStateChanged
class MediaPipeline extends MediaObject
  ctor
  prop latencyStats:boolean RW
  method getGstreamerDot(details:GstreamerDotDetails?) -> String
  method dumpGstreamerDot(details:GstreamerDotDetails?)
class SdpEndpoint extends SessionEndpoint abstract
  prop maxAudioRecvBandwidth:int RW
  prop maxVideoRecvBandwidth:int RW
  method generateOffer(options:OfferOptions?) -> String
  method processOffer(offer:String) -> String
  method processAnswer(answer:String) -> String
  method getLocalSessionDescriptor() -> String
  method getRemoteSessionDescriptor() -> String
class BaseRtpEndpoint extends SdpEndpoint abstract
  prop minVideoRecvBandwidth:int RW
  prop minVideoSendBandwidth:int RW
  prop maxVideoSendBandwidth:int RW
  prop mediaState:MediaState RO
  prop connectionState:ConnectionState RO
  prop mtu:int RW
  prop rembParams:RembParams RW
  method requestKeyframe()
  events MediaStateChanged, ConnectionStateChanged
class MediaElement extends MediaObject abstract
  prop encoderBitrate:int RW
  prop minEncoderBitrate:int RW
  prop maxEncoderBitrate:int RW
  method getSourceConnections(mediaType:MediaType?,
    description:String?) -> ElementConnectionData[]
  method getSinkConnections(mediaType:MediaType?,
    description:String?) -> ElementConnectionData[]
  method connect(sink:MediaElement, mediaType:MediaType?, sourceMediaDescription:String?,
    sinkMediaDescription:String?)
  method disconnect(sink:MediaElement, mediaType:MediaType?, sourceMediaDescription:String?,
    sinkMediaDescription:String?)
  method setAudioFormat(caps:AudioCaps)
  method setVideoFormat(caps:VideoCaps)
  method dumpGstreamerDot(details:GstreamerDotDetails?)
  method getGstreamerDot(details:GstreamerDotDetails?) -> String
  method getStats(mediaType:MediaType?) -> Stats<>
  method isMediaFlowingIn(mediaType:MediaType, sinkMediaDescription:String?) -> boolean
  method isMediaFlowingOut(mediaType:MediaType, sourceMediaDescription:String?) -> boolean
  method isMediaTranscoding(mediaType:MediaType, binName:String?) -> boolean
  events ElementConnected, ElementDisconnected, MediaFlowOutStateChanged,
    MediaFlowInStateChanged, MediaTranscodingStateChanged
enum UriEndpointState: STOP START PAUSE
type ServerInfo
  fields version:String, modules:ModuleInfo[], type:ServerType, capabilities:String[]
enum ServerType: KMS KCS
enum GstreamerDotDetails: SHOW_MEDIA_TYPE SHOW_CAPS_DETAILS SHOW_NON_DEFAULT_PARAMS SHOW_STATES
    SHOW_FULL_PARAMS SHOW_ALL SHOW_VERBOSE
type ModuleInfo
  fields version:String, name:String, generationTime:String, factories:String[]
enum MediaState: DISCONNECTED CONNECTED
enum MediaFlowState: FLOWING NOT_FLOWING
enum MediaTranscodingState: TRANSCODING NOT_TRANSCODING
enum ConnectionState: DISCONNECTED CONNECTED
enum MediaType: AUDIO DATA VIDEO
enum FilterType: AUDIO AUTODETECT VIDEO
enum VideoCodec: H265 AV1 VP9 VP8 H264 RAW
enum AudioCodec: OPUS PCMU PCMA RAW
type Fraction
  fields numerator:int, denominator:int
type AudioCaps
  fields codec:AudioCodec, bitrate:int
type VideoCaps
  fields codec:VideoCodec, framerate:Fraction
type ElementConnectionData
  fields source:MediaElement, sink:MediaElement, type:MediaType, sourceDescription:String,
    sinkDescription:String
type Tag
  fields key:String, value:String
enum StatsType: inboundrtp outboundrtp session datachannel track transport candidatepair
    localcandidate remotecandidate element endpoint
type MediaLatencyStat
  fields name:String, type:MediaType, avg:double
type Stats
  fields id:String, type:StatsType, timestampMillis:int64
type ElementStats extends Stats
  fields inputLatency:MediaLatencyStat[]
type EndpointStats extends ElementStats
  fields E2ELatency:MediaLatencyStat[]
type RTCStats extends Stats
type RTCRTPStreamStats extends RTCStats
  fields ssrc:String, associateStatsId:String, isRemote:boolean, mediaTrackId:String,
    transportId:String, codecId:String, firCount:int64, pliCount:int64, nackCount:int64,
    sliCount:int64, remb:int64, packetsLost:int64, fractionLost:double
type RTCCodec extends RTCStats
  fields payloadType:int64, codec:String, clockRate:int64, channels:int64, parameters:String
type RTCInboundRTPStreamStats extends RTCRTPStreamStats
  fields packetsReceived:int64, bytesReceived:int64, jitter:double
type RTCOutboundRTPStreamStats extends RTCRTPStreamStats
  fields packetsSent:int64, bytesSent:int64, targetBitrate:double, roundTripTime:double
type RTCPeerConnectionStats extends RTCStats
  fields dataChannelsOpened:int64, dataChannelsClosed:int64
type RTCMediaStreamStats extends RTCStats
  fields streamIdentifier:String, trackIds:String[]
type RTCMediaStreamTrackStats extends RTCStats
  fields trackIdentifier:String, remoteSource:boolean, ssrcIds:String[], frameWidth:int64,
    frameHeight:int64, framesPerSecond:double, framesSent:int64, framesReceived:int64,
    framesDecoded:int64, framesDropped:int64, framesCorrupted:int64, audioLevel:double,
    echoReturnLoss:double, echoReturnLossEnhancement:double
enum RTCDataChannelState: connecting open closing closed
type RTCDataChannelStats extends RTCStats
  fields label:String, protocol:String, datachannelid:int64, state:RTCDataChannelState,
    messagesSent:int64, bytesSent:int64, messagesReceived:int64, bytesReceived:int64
type RTCTransportStats extends RTCStats
  fields bytesSent:int64, bytesReceived:int64, rtcpTransportStatsId:String,
    activeConnection:boolean, selectedCandidatePairId:String, localCertificateId:String,
    remoteCertificateId:String
enum RTCStatsIceCandidateType: host serverreflexive peerreflexive relayed
type RTCIceCandidateAttributes extends RTCStats
  fields ipAddress:String, portNumber:int64, transport:String,
    candidateType:RTCStatsIceCandidateType, priority:int64, addressSourceUrl:String
enum RTCStatsIceCandidatePairState: frozen waiting inprogress failed succeeded cancelled
type RTCIceCandidatePairStats extends RTCStats
  fields transportId:String, localCandidateId:String, remoteCandidateId:String,
    state:RTCStatsIceCandidatePairState, priority:int64, nominated:boolean, writable:boolean,
    readable:boolean, bytesSent:int64, bytesReceived:int64, roundTripTime:double,
    availableOutgoingBitrate:double, availableIncomingBitrate:double
type RTCCertificateStats extends RTCStats
  fields fingerprint:String, fingerprintAlgorithm:String, base64Certificate:String,
    issuerCertificateId:String
type CodecConfiguration
  fields name:String?, properties:String<>?
type RembParams
  fields packetsRecvIntervalTop:int?, exponentialFactor:float?, linealFactorMin:int?,
    linealFactorGrade:float?, decrementFactor:float?, thresholdFactor:float?, upLosses:int?,
    rembOnConnect:int?
type OfferOptions
  fields offerToReceiveAudio:boolean?, offerToReceiveVideo:boolean?
event RaiseBase
  fields source:MediaObject, timestampMillis:String, tags:Tag[]
event Error extends RaiseBase
  fields description:String, errorCode:int, type:String
event MediaSessionTerminated extends Media
event MediaSessionStarted extends Media
event Media extends RaiseBase
  fields type:String
event ObjectCreated extends RaiseBase
  fields object:MediaObject
event ObjectDestroyed extends RaiseBase
  fields objectId:String
event MediaStateChanged extends Media
  fields oldState:MediaState, newState:MediaState
event ConnectionStateChanged extends Media
  fields oldState:ConnectionState, newState:ConnectionState
event MediaFlowOutStateChanged extends Media
  fields state:MediaFlowState, padName:String, mediaType:MediaType
event MediaFlowInStateChanged extends Media
  fields state:MediaFlowState, padName:String, mediaType:MediaType
event MediaTranscodingStateChanged extends Media
  fields state:MediaTranscodingState, binName:String, mediaType:MediaType
event ElementConnected extends Media
  fields sink:MediaElement, mediaType:MediaType, sourceMediaDescription:String,
    sinkMediaDescription:String
event ElementDisconnected extends Media
  fields sink:MediaElement, mediaType:MediaType, sourceMediaDescription:String,
    sinkMediaDescription:String
event UriEndpointStateChanged extends Media
  fields state:UriEndpointState
""",
    "elements": """\
class AlphaBlending extends Hub
  ctor mediaPipeline:MediaPipeline
  method setMaster(source:HubPort, zOrder:int)
  method setPortProperties(relativeX:float, relativeY:float, zOrder:int, relativeWidth:float,
    relativeHeight:float, port:HubPort)
class Composite extends Hub
  ctor mediaPipeline:MediaPipeline, width:int?, height:int?, framerate:int?
class Dispatcher extends Hub
  ctor mediaPipeline:MediaPipeline
  method connect(source:HubPort, sink:HubPort)
class DispatcherOneToMany extends Hub
  ctor mediaPipeline:MediaPipeline
  method setSource(source:HubPort)
  method removeSource()
class HttpPostEndpoint extends HttpEndpoint
  ctor mediaPipeline:MediaPipeline, disconnectionTimeout:int?, useEncodedMedia:boolean?
  events EndOfStream
class HttpEndpoint extends SessionEndpoint abstract
  method getUrl() -> String
class Mixer extends Hub
  ctor mediaPipeline:MediaPipeline
  method connect(media:MediaType, source:HubPort, sink:HubPort)
  method disconnect(media:MediaType, source:HubPort, sink:HubPort)
class PlayerEndpoint extends UriEndpoint
  ctor mediaPipeline:MediaPipeline, uri:String, useEncodedMedia:boolean?, networkCache:int?
  prop videoInfo:VideoInfo RO
  prop elementGstreamerDot:String RO
  prop position:int64 RW
  method play()
  events EndOfStream
class RecorderEndpoint extends UriEndpoint
  ctor mediaPipeline:MediaPipeline, uri:String, mediaProfile:MediaProfileSpecType?,
    stopOnEndOfStream:boolean?
  method record()
  method stopAndWait()
  events Recording, Paused, Stopped
class RtpEndpoint extends BaseRtpEndpoint
  ctor mediaPipeline:MediaPipeline, crypto:SDES?, useIpv6:boolean?
  events OnKeySoftLimit
class WebRtcEndpoint extends BaseRtpEndpoint
  ctor mediaPipeline:MediaPipeline, recvonly:boolean?, sendonly:boolean?,
    useDataChannels:boolean?, certificateKeyType:CertificateKeyType?, qosDscp:DSCPValue?
  prop networkInterfaces:String RW
  prop iceTcp:boolean RW
  prop stunServerAddress:String RW
  prop stunServerPort:int RW
  prop turnUrl:String RW
  prop externalIPv4:String RW
  prop externalIPv6:String RW
  prop ICECandidatePairs:IceCandidatePair[] RO
  prop IceConnectionState:IceConnection[] RO
  prop DtlsConnectionState:DtlsConnection[] RO
  method gatherCandidates()
  method addIceCandidate(candidate:IceCandidate)
  method createDataChannel(label:String?, ordered:boolean?, maxPacketLifeTime:int?,
    maxRetransmits:int?, protocol:String?)
  method closeDataChannel(channelId:int)
  events IceCandidateFound, IceGatheringDone, IceComponentStateChanged,
    DtlsConnectionStateChange, DataChannelOpened, DataChannelClosed, NewCandidatePairSelected
enum MediaProfileSpecType: WEBM MKV MP4 WEBM_VIDEO_ONLY WEBM_AUDIO_ONLY MKV_VIDEO_ONLY
    MKV_AUDIO_ONLY MP4_VIDEO_ONLY MP4_AUDIO_ONLY JPEG_VIDEO_ONLY KURENTO_SPLIT_RECORDER FLV
type VideoInfo
  fields isSeekable:boolean, seekableInit:int64, seekableEnd:int64, duration:int64
enum GapsFixMethod: NONE GENPTS FILL_IF_TRANSCODING
enum CryptoSuite: AES_128_CM_HMAC_SHA1_32 AES_128_CM_HMAC_SHA1_80 AES_256_CM_HMAC_SHA1_32
    AES_256_CM_HMAC_SHA1_80
type SDES
  fields key:String?, keyBase64:String?, crypto:CryptoSuite?
type IceCandidate
  fields candidate:String, sdpMid:String, sdpMLineIndex:int
enum IceComponentState: DISCONNECTED GATHERING CONNECTING CONNECTED READY FAILED
enum DtlsConnectionState: NEW CLOSED FAILED CONNECTING CONNECTED
type IceCandidatePair
  fields streamId:String, componentId:int, localCandidate:String, remoteCandidate:String
type IceConnection
  fields streamId:String, componentId:int, state:IceComponentState
type DtlsConnection
  fields streamId:String, componentId:String, connectionId:String, state:DtlsConnectionState
enum CertificateKeyType: RSA ECDSA
enum DSCPValue: NO_DSCP NO_VALUE AUDIO_VERYLOW AUDIO_LOW AUDIO_MEDIUM AUDIO_HIGH VIDEO_VERYLOW
    VIDEO_LOW VIDEO_MEDIUM VIDEO_MEDIUM_THROUGHPUT VIDEO_HIGH VIDEO_HIGH_THROUGHPUT
    DATA_VERYLOW DATA_LOW DATA_MEDIUM DATA_HIGH CHROME_HIGH CHROME_MEDIUM CHROME_LOW
    CHROME_VERYLOW CS0 CS1 CS2 CS3 CS4 CS5 CS6 CS7 AF11 AF12 AF13 AF21 AF22 AF23 AF31 AF32 AF33
    AF41 AF42 AF43 EF VOICEADMIT LE
event EndOfStream extends Media
event Recording extends Media
event Paused extends Media
event Stopped extends Media
event OnKeySoftLimit extends Media
  fields mediaType:MediaType
event IceCandidateFound extends Media
  fields candidate:IceCandidate
event IceGatheringDone extends Media
event IceComponentStateChanged extends Media
  fields streamId:int, componentId:int, state:IceComponentState
event DtlsConnectionStateChange extends Media
  fields streamId:String, componentId:String, connectionId:String, state:DtlsConnectionState
event DataChannelOpened extends Media
  fields channelId:int
event DataChannelClosed extends Media
  fields channelId:int
event NewCandidatePairSelected extends Media
  fields candidatePair:IceCandidatePair
""",
    # Only what this server implements of the module (the other classes answer 40108).
    "filters": """\
class ZBarFilter extends Filter
  ctor mediaPipeline:MediaPipeline
  events CodeFound
event CodeFound extends Media
  fields codeType:String, value:String
""",
}
# Modules of which the server implements a part: the reference must be in KMS's files.
PARTIAL = frozenset({"filters"})

INTERFACES = {
    "core": "server/module-core/src/server/interface",
    "elements": "server/module-elements/src/server/interface",
    "filters": "server/module-filters/src/server/interface",
}


def reference_lines(text: str) -> set[str]:
    """The reference of one module as flat lines, in the form `kmd_lines` gives."""
    entries: list[str] = []
    for line in text.splitlines():
        if line.startswith("    "):
            entries[-1] += " " + line.strip()
        elif line.strip():
            entries.append(line)
    lines: set[str] = set()
    head = ""
    for entry in entries:
        if not entry.startswith(" "):  # class, type, event or enum
            lines.add(entry)
            head = " ".join(entry.split(":")[0].split()[:2])
            continue
        word, _, rest = entry.strip().partition(" ")
        if word == "ctor":
            lines.add(f"{head} ctor({rest})")
        elif word in ("events", "fields"):
            lines |= {f"{head} {word[:-1]} {item}" for item in rest.split(", ")}
        else:  # prop, method
            lines.add(f"{head} {word} {rest}")
    return lines


def kmd_lines(documents: list[dict[str, Any]]) -> set[str]:
    """A module's KMD documents as flat lines: names, types, optionality, access, values."""
    lines: set[str] = set()
    for document in documents:
        for cls in document.get("remoteClasses", []):
            head = f"class {cls['name']}"
            lines.add(head + _extends(cls) + (" abstract" if cls.get("abstract") else ""))
            if "constructor" in cls:
                lines.add(f"{head} ctor({_params(cls['constructor']['params'])})")
            for prop in cls.get("properties", []):
                access = "final" if prop.get("final") else "RO" if prop.get("readOnly") else "RW"
                lines.add(f"{head} prop {prop['name']}:{prop['type']} {access}")
            for method in cls.get("methods", []):
                returns = f" -> {method['return']['type']}" if "return" in method else ""
                lines.add(f"{head} method {method['name']}({_params(method['params'])}){returns}")
            lines |= {f"{head} event {event}" for event in cls.get("events", [])}
        for complex_type in document.get("complexTypes", []):
            name = complex_type["name"]
            if complex_type["typeFormat"] == "ENUM":
                lines.add(f"enum {name}: {' '.join(complex_type['values'])}")
                continue
            lines.add(f"type {name}{_extends(complex_type)}")
            lines |= {f"type {name} field {_params([f])}" for f in complex_type["properties"]}
        for event in document.get("events", []):
            lines.add(f"event {event['name']}{_extends(event)}")
            lines |= {f"event {event['name']} field {_params([f])}" for f in event["properties"]}
    return lines


def _extends(entry: dict[str, Any]) -> str:
    return f" extends {entry['extends']}" if entry.get("extends") else ""


def _params(params: list[dict[str, Any]]) -> str:
    return ", ".join(f"{p['name']}:{p['type']}{'?' if p.get('optional') else ''}" for p in params)


def kms_documents(module: str) -> list[dict[str, Any]] | None:
    """KMS's descriptor files of a module from $KURENTO_SRC (a checkout or a git directory), or
    None when there is none."""
    root = Path(os.environ.get("KURENTO_SRC", "/tmp/kurento-src"))
    folder = INTERFACES[module]
    if (root / folder).is_dir():
        texts = [p.read_text() for p in sorted((root / folder).glob(f"{module}*.kmd.json"))]
    elif (root / "HEAD").is_file() and (root / "objects").is_dir():
        git = ["git", "--git-dir", str(root)]
        listing = subprocess.run(
            [*git, "ls-tree", "--name-only", "HEAD", f"{folder}/"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        texts = [
            subprocess.run(
                [*git, "show", f"HEAD:{name}"], capture_output=True, text=True, check=True
            ).stdout
            for name in listing
            if Path(name).name.startswith(module) and name.endswith(".kmd.json")
        ]
    else:
        return None
    return [json.loads(_without_comments(text), strict=False) for text in texts]


def _without_comments(text: str) -> str:
    """KMS's files carry `//` comments (DSCPValue's values), which JSON does not allow."""
    return re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*', lambda m: m.group(1) or "", text)


def _differences(found: set[str], expected: set[str]) -> dict[str, list[str]]:
    return {"missing": sorted(expected - found), "extra": sorted(found - expected)}


@pytest.mark.parametrize("module", ["core", "elements", "filters"])
async def test_get_kmd_lists_what_kms7_lists(rpc: Rpc, module: str) -> None:
    """Every class, constructor parameter, property, method, event and complex type of KMS 7's
    module (of filters, what is implemented), with its types, and nothing else."""
    kmd = json.loads(await rpc.invoke(MANAGER, "getKmd", moduleName=module))
    found = kmd_lines([kmd])
    assert _differences(found, reference_lines(KMS7[module])) == {"missing": [], "extra": []}


async def test_the_server_keeps_to_what_its_kmd_says(rpc: Rpc) -> None:
    """A final property has a getter and no setter; a parameter the KMD does not mark optional
    is required (KMS: 40001)."""
    pipeline = await rpc.create("MediaPipeline")
    assert await rpc.invoke(pipeline, "getId") == pipeline
    for operation, params in (("setId", {"id": "x"}), ("setCreationTime", {"creationTime": 1})):
        refused = await error_of(
            rpc, "invoke", object=pipeline, operation=operation, operationParams=params
        )
        assert refused["code"] == 40008, refused
    assert await rpc.invoke(pipeline, "getName") == pipeline
    await rpc.invoke(pipeline, "setName", name="room")
    assert await rpc.invoke(pipeline, "getName") == "room"
    missing = await error_of(
        rpc, "invoke", object=MANAGER, operation="getUsedCpu", operationParams={}
    )
    assert missing["code"] == 40001, missing
    assert isinstance(await rpc.invoke(MANAGER, "getUsedCpu", interval=10), float)
    await rpc.request("release", object=pipeline)


def main() -> None:
    """Check the reference above against KMS's own files (a developer's step when it changes;
    CI has no Kurento sources): `KURENTO_SRC=<checkout or git dir> python -m
    tests.mediaserver.test_kmd`."""
    failed = False
    for module in KMS7:
        documents = kms_documents(module)
        if documents is None:
            raise SystemExit("no Kurento sources at $KURENTO_SRC (default /tmp/kurento-src)")
        differences = _differences(kmd_lines(documents), reference_lines(KMS7[module]))
        if module in PARTIAL:
            differences["extra"] = []  # KMS's classes this server leaves out
        ok = differences == {"missing": [], "extra": []}
        failed |= not ok
        print(module, "matches KMS 7" if ok else differences)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
