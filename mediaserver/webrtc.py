"""WebRtcEndpoint: one aiortc peer connection whose received media feeds the element's hubs and
whose senders carry what the element's pads receive, encoded frames in both directions (see
forwarding.py).

Negotiation follows KMS: processOffer or generateOffer/processAnswer once; ICE candidates trickle
out as IceCandidateFound after gatherCandidates() and in through addIceCandidate (queued until
the remote description is known). KMS has no ICE restart, and neither does this endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import X509_DIGEST_ALGORITHMS
from aiortc.sdp import SessionDescription, candidate_from_sdp, candidate_to_sdp

from .data_channels import DataChannels, DataMessage
from .elements import MEDIA_KINDS, Endpoint, MediaPipeline
from .errors import Code, KurentoError, invalid_params, too_large, too_many
from .forwarding import (
    FORWARDING,
    ForwardingReceiver,
    ForwardingSender,
    PacketTrack,
    RtcpFeedback,
    SinkPad,
    codec_name,
)
from .frames import EncodedFrame
from .limits import MAX_CANDIDATE_LENGTH, MAX_REMOTE_CANDIDATES, MAX_SDP_MID
from .objects import Param, Property, Registry, complex_value
from .transports import MediaStream

logger = logging.getLogger(__name__)

_CANDIDATE = re.compile(r"^(a=)?candidate:\S+ \d+ (udp|tcp) \d+ \S+ \d+ typ \w+", re.IGNORECASE)
_KINDS = tuple(MEDIA_KINDS.values())
# Seconds without RTP or RTCP from the peer before its media counts as gone (KMS: its RTP
# session's source timeout); a peer that left properly says so at once (DTLS close).
PEER_SILENCE_TIMEOUT = 10.0
# What KMS's BaseRtpEndpoint and SdpEndpoint properties start at (kmsbasertpendpoint.c).
BASE_RTP_DEFAULTS: dict[str, Any] = {
    "maxAudioRecvBandwidth": 0,
    "maxVideoRecvBandwidth": 0,
    "minVideoRecvBandwidth": 0,
    "minVideoSendBandwidth": 100,
    "maxVideoSendBandwidth": 500,
    "mtu": 1200,
    "rembParams": None,
}
# The DSCP codepoint KMS puts on a WebRtcEndpoint's packets for each DSCPValue
# (WebRtcEndpointImpl.cpp); NO_VALUE and NO_DSCP leave the sockets alone.
DSCP_CODEPOINTS = {
    **{f"CS{n}": 8 * n for n in range(8)},
    **{f"AF{c}{d}": 8 * c + 2 * d for c in range(1, 5) for d in range(1, 4)},
    "EF": 46,
    "VOICEADMIT": 44,
    "LE": 1,
    "AUDIO_VERYLOW": 1,
    "AUDIO_LOW": 0,
    "AUDIO_MEDIUM": 46,
    "AUDIO_HIGH": 46,
    "VIDEO_VERYLOW": 1,
    "VIDEO_LOW": 0,
    "VIDEO_MEDIUM": 36,
    "VIDEO_MEDIUM_THROUGHPUT": 38,
    "VIDEO_HIGH": 36,
    "VIDEO_HIGH_THROUGHPUT": 34,
    "DATA_VERYLOW": 1,
    "DATA_LOW": 0,
    "DATA_MEDIUM": 10,
    "DATA_HIGH": 18,
    "CHROME_HIGH": 56,
    "CHROME_MEDIUM": 56,
    "CHROME_LOW": 0,
    "CHROME_VERYLOW": 8,
}


@dataclass(frozen=True)
class IceDefaults:
    """Server-wide ICE servers for endpoints that set none of their own."""

    stun_address: str = ""
    stun_port: int = 3478
    turn_url: str = ""


class SessionEndpoint(Endpoint):
    TYPE = "SessionEndpoint"
    EVENTS = frozenset({"MediaSessionTerminated", "MediaSessionStarted"})


class SdpEndpoint(SessionEndpoint):
    """An endpoint negotiated by an SDP offer and answer. The order KMS enforces (one offer, an
    answer only to our own offer, once) and the descriptors kept are here; subclasses negotiate
    in `generate_offer`, `process_offer` and `process_answer`, and set `local_sdp` and
    `remote_sdp` as they go."""

    TYPE = "SdpEndpoint"
    PROPERTIES = (
        Property("maxAudioRecvBandwidth", kind=int),
        Property("maxVideoRecvBandwidth", kind=int),
    )

    def __init__(self, registry: Registry, pipeline: MediaPipeline) -> None:
        super().__init__(registry, pipeline)
        self.local_sdp: str | None = None
        self.remote_sdp: str | None = None
        self.offer_generated = False
        self._lock = asyncio.Lock()  # one negotiation step at a time

    async def op_generateOffer(self, options: dict | None = None) -> str:
        async with self._lock:
            if self.local_sdp is not None:
                raise KurentoError(
                    Code.SDP_END_POINT_ALREADY_NEGOTIATED, "Endpoint already negotiated"
                )
            return await self.generate_offer(options or {})

    async def op_processOffer(self, offer: str) -> str:
        async with self._lock:
            if self.remote_sdp is not None or self.offer_generated:
                raise KurentoError(
                    Code.SDP_END_POINT_ALREADY_NEGOTIATED, "Endpoint already negotiated"
                )
            return await self.process_offer(offer)

    async def op_processAnswer(self, answer: str) -> str:
        async with self._lock:
            if not self.offer_generated:
                raise KurentoError(
                    Code.SDP_END_POINT_NOT_OFFER_GENERATED,
                    "Offer not generated. It is not possible to process an answer.",
                )
            if self.remote_sdp is not None:
                raise KurentoError(
                    Code.SDP_END_POINT_ANSWER_ALREADY_PROCCESED, "Sdp Answer already processed"
                )
            return await self.process_answer(answer)

    async def op_getLocalSessionDescriptor(self) -> str:
        if self.local_sdp is None:
            raise KurentoError(Code.SDP_END_POINT_NO_LOCAL_SDP_ERROR, "Local SDP not generated")
        return self.local_sdp

    async def op_getRemoteSessionDescriptor(self) -> str:
        if self.remote_sdp is None:
            raise KurentoError(Code.SDP_END_POINT_NO_REMOTE_SDP_ERROR, "Remote SDP not set")
        return self.remote_sdp

    async def generate_offer(self, options: dict) -> str:
        raise NotImplementedError

    async def process_offer(self, offer: str) -> str:
        raise NotImplementedError

    async def process_answer(self, answer: str) -> str:
        raise NotImplementedError


class BaseRtpEndpoint(SdpEndpoint):
    """An endpoint that sends and receives RTP: its media and connection states (and their
    events), its bandwidth properties, and a getStats that starts with its EndpointStats entry,
    as KMS's do. Its pads stay inactive until a negotiation says what it sends."""

    TYPE = "BaseRtpEndpoint"
    EVENTS = frozenset({"MediaStateChanged", "ConnectionStateChanged"})
    PROPERTIES = (
        Property("minVideoRecvBandwidth", kind=int),
        Property("minVideoSendBandwidth", kind=int),
        Property("maxVideoSendBandwidth", kind=int),
        Property("mediaState", read_only=True, type_name="MediaState"),
        Property("connectionState", read_only=True, type_name="ConnectionState"),
        Property("mtu", kind=int),
        Property("rembParams", kind=dict, type_name="RembParams"),
    )

    def __init__(self, registry: Registry, pipeline: MediaPipeline) -> None:
        super().__init__(registry, pipeline)
        self.values.update(BASE_RTP_DEFAULTS)
        self.media_state = "DISCONNECTED"
        self.connection_state = "DISCONNECTED"
        for pad in self.pads.values():
            pad.active = False

    def get_property(self, name: str) -> Any:
        if name == "mediaState":
            return self.media_state
        if name == "connectionState":
            return self.connection_state
        return super().get_property(name)

    def _set_connection_state(self, state: str) -> None:
        if state != self.connection_state:
            old, self.connection_state = self.connection_state, state
            self.emit("ConnectionStateChanged", oldState=old, newState=state)

    def _set_media_state(self, state: str) -> None:
        if state != self.media_state:
            old, self.media_state = self.media_state, state
            self.emit("MediaStateChanged", oldState=old, newState=state)

    async def op_requestKeyframe(self) -> None:
        self.request_keyframe("video")

    def element_stats(self, millis: int) -> dict[str, Any]:
        return complex_value(
            "EndpointStats",
            id=self.id,
            type="endpoint",
            timestampMillis=millis,
            inputLatency=[],
            E2ELatency=[],
        )


class WebRtcEndpoint(BaseRtpEndpoint):
    TYPE = "WebRtcEndpoint"
    ABSTRACT = False
    MODULE_NAME = "elements"
    CONSTRUCTOR = (
        Param("mediaPipeline", "MediaPipeline"),
        Param("recvonly", "boolean", optional=True),
        Param("sendonly", "boolean", optional=True),
        Param("useDataChannels", "boolean", optional=True),
        Param("certificateKeyType", "CertificateKeyType", optional=True),
        Param("qosDscp", "DSCPValue", optional=True),
    )
    EVENTS = frozenset(
        {
            "IceCandidateFound",
            "IceGatheringDone",
            "IceComponentStateChanged",
            "DtlsConnectionStateChange",
            "DataChannelOpened",
            "DataChannelClosed",
            "NewCandidatePairSelected",
        }
    )
    PROPERTIES = (
        Property("networkInterfaces"),
        Property("iceTcp", kind=bool),
        Property("stunServerAddress"),
        Property("stunServerPort", kind=int),
        Property("turnUrl"),
        Property("externalIPv4"),
        Property("externalIPv6"),
        Property("ICECandidatePairs", read_only=True, type_name="IceCandidatePair[]"),
        Property("IceConnectionState", read_only=True, type_name="IceConnection[]"),
        Property("DtlsConnectionState", read_only=True, type_name="DtlsConnection[]"),
    )

    def __init__(
        self,
        registry: Registry,
        pipeline: MediaPipeline,
        *,
        ice: IceDefaults,
        recvonly: bool = False,
        sendonly: bool = False,
        use_data_channels: bool = False,
        certificate_key_type: str = "RSA",
        qos_dscp: str = "NO_VALUE",
    ) -> None:
        super().__init__(registry, pipeline)
        self.ice_defaults = ice
        self.use_data_channels = use_data_channels
        # aiortc's DTLS takes ECDSA keys only (its cipher list is ECDHE-ECDSA): KMS's default,
        # RSA, is accepted and served with the ECDSA certificate aiortc makes.
        self.certificate_key_type = certificate_key_type
        self.dscp = DSCP_CODEPOINTS.get(qos_dscp)
        self.data = DataChannels(self.id, self._emit_live, self.push_data)
        # Offered m-lines this endpoint rejects without aiortc seeing them (an application
        # m-line without useDataChannels, as KMS has no handler for it then): index -> mid.
        self.dropped_mlines: dict[int, str | None] = {}
        self.bundled_rejects: set[str] = set()
        self.direction = "recvonly" if recvonly else "sendonly" if sendonly else "sendrecv"
        self.values.update(
            networkInterfaces="",
            iceTcp=True,
            stunServerAddress="",
            stunServerPort=0,
            turnUrl="",
            externalIPv4="",
            externalIPv6="",
        )
        self.pc: RTCPeerConnection | None = None
        self.tracks = {kind: PacketTrack(kind) for kind in _KINDS}
        for kind, track in self.tracks.items():
            track.on_overflow = self.pads[kind].resync
            self.pads[kind].fanout = lambda frame, pad, k=kind: self._fanout_member(k, frame, pad)
        self.send_codecs: dict[str, str] = {}
        self.receivers: dict[str, list[ForwardingReceiver]] = {kind: [] for kind in _KINDS}
        self.pending_candidates: list[dict[str, Any]] = []
        self.remote_candidates = 0  # added by the client, queued or not (limits.py)
        self.gather_requested = False
        self.gathering_done = False
        self.peer_gone = False  # its connection closed or failed: media stays DISCONNECTED
        self.streams: list[MediaStream] = []

    # -- properties ---------------------------------------------------------------------------

    def get_property(self, name: str) -> Any:
        if name == "ICECandidatePairs":
            return [stream.pair for stream in self.streams if stream.pair is not None]
        if name == "IceConnectionState":
            return [stream.ice_connection() for stream in self.streams]
        if name == "DtlsConnectionState":
            return [c for stream in self.streams for c in stream.dtls_connections()]
        return super().get_property(name)

    def set_property(self, name: str, value: Any) -> None:
        if name == "turnUrl" and value and not _parse_turn_url(value):
            raise invalid_params(f"Invalid turnUrl '{value}' (expected user:password@host:port)")
        super().set_property(name, value)

    # -- negotiation --------------------------------------------------------------------------

    async def process_offer(self, offer: str) -> str:
        parsed = parse_sdp(offer, "offer")
        dropped = self._unhandled_mlines(parsed)
        rejected = [_rejected(media) or i in dropped for i, media in enumerate(parsed.media)]
        if all(rejected):
            # Like KMS: nothing it can negotiate (plain RTP/AVP, say) is answered, every
            # m-line rejected with port 0, not refused as an error.
            self.remote_sdp, self.local_sdp = offer, _rejecting_answer(parsed)
            return self.local_sdp
        if any(_rejected(media) for media in parsed.media):
            raise KurentoError(
                Code.SDP_END_POINT_PROCESS_OFFER_ERROR,
                "Error processing offer: it mixes WebRTC (SAVPF) and plain RTP media",
            )
        kept = offer
        if dropped:
            kept = _without_mlines(offer, dropped, parsed)
            self.dropped_mlines = {i: parsed.media[i].rtp.muxId for i in dropped}
            bundle = next((g for g in parsed.group if g.semantic == "BUNDLE"), None)
            self.bundled_rejects = {
                mid for mid in self.dropped_mlines.values() if bundle and mid in bundle.items
            }
            parsed = parse_sdp(kept, "offer")
        _check_transport(parsed, Code.SDP_END_POINT_PROCESS_OFFER_ERROR, "offer")
        pc = self._peer_connection()
        async with self._negotiating(
            Code.SDP_END_POINT_PROCESS_OFFER_ERROR, "Error processing offer"
        ):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=kept, type="offer"))
            for transceiver in pc.getTransceivers():
                self._attach(transceiver)
            _answer_as_dtls_server(pc, parsed)
            await pc.setLocalDescription(await pc.createAnswer())
        self.remote_sdp = offer
        return await self._negotiated()

    def _unhandled_mlines(self, offer: SessionDescription) -> list[int]:
        """The offered m-lines KMS has no handler for, which it rejects in its answer: any
        application m-line without useDataChannels, every one after the first with it, and
        media of other kinds."""
        dropped, data_taken = [], not self.use_data_channels
        for index, media in enumerate(offer.media):
            if media.kind in _KINDS:
                continue
            if media.kind == "application" and not data_taken and media.port != 0:
                data_taken = True
                continue
            dropped.append(index)
        return dropped

    async def generate_offer(self, options: dict) -> str:
        pc = self._peer_connection()
        async with self._negotiating(
            Code.SDP_END_POINT_GENERATE_OFFER_ERROR, "Error generating offer"
        ):
            for kind in _KINDS:
                if options.get(f"offerToReceive{kind.capitalize()}", True) is False:
                    continue
                self._attach(pc.addTransceiver(kind, direction=self.direction))
            await pc.setLocalDescription(await pc.createOffer())
        self.offer_generated = True
        self.local_sdp = pc.localDescription.sdp
        self._emit_candidates_if_requested()
        return self.local_sdp

    async def process_answer(self, answer: str) -> str:
        _check_transport(
            parse_sdp(answer, "answer"), Code.SDP_END_POINT_PROCESS_ANSWER_ERROR, "answer"
        )
        assert self.pc is not None
        async with self._negotiating(
            Code.SDP_END_POINT_PROCESS_ANSWER_ERROR, "Error processing answer", reset=False
        ):
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        self.remote_sdp = answer
        return await self._negotiated()

    @contextlib.asynccontextmanager
    async def _negotiating(
        self, code: Code, failure: str, *, reset: bool = True
    ) -> AsyncIterator[None]:
        """Run aiortc's side of a negotiation as the media server's own (so its receivers forward,
        see forwarding.FORWARDING) and report a failure as the given KMS SDP error; a failed
        offer leaves the endpoint as it was before, ready for another try."""
        token = FORWARDING.set(True)
        try:
            yield
        except KurentoError:
            raise
        except Exception as exc:
            if reset:
                await self._reset_peer_connection()
            raise KurentoError(code, f"{failure}: {exc}") from exc
        finally:
            FORWARDING.reset(token)

    def _peer_connection(self) -> RTCPeerConnection:
        if self.pc is None:
            # With useDataChannels an offer carries an application m-line, as KMS's does.
            self.pc = RTCPeerConnection(
                RTCConfiguration(
                    iceServers=self._ice_servers(),
                    alwaysNegotiateDataChannels=self.use_data_channels,
                )
            )
            self.pc.on("connectionstatechange", self._on_connection_state)
        return self.pc

    async def _reset_peer_connection(self) -> None:
        if self.pc is not None:
            pc, self.pc = self.pc, None
            await pc.close()
        for receivers in self.receivers.values():
            receivers.clear()

    def _attach(self, transceiver: RTCRtpTransceiver) -> None:
        """Point a transceiver's receiver at the element's hub, its sender at the pad's track."""
        kind = transceiver.kind
        if kind not in self.tracks:
            return
        transceiver.direction = self.direction
        if self.direction != "recvonly":
            transceiver.sender.replaceTrack(self.tracks[kind])
            transceiver.sender._send_keyframe = self.pads[kind].request_keyframe  # type: ignore
        receiver = transceiver.receiver
        if isinstance(receiver, ForwardingReceiver) and self.direction != "sendonly":
            receiver.on_frame = self.hubs[kind].push
            self.receivers[kind].append(receiver)

    async def _negotiated(self) -> str:
        assert self.pc is not None
        self._watch_streams()
        self._mark_packets()
        if self.use_data_channels and self.pc.sctp is not None and _data_accepted(self.pc):
            self.data.attach(self.pc)
        for transceiver in self.pc.getTransceivers():
            codecs = [c for c in transceiver._codecs if codec_name(c) not in ("rtx", "red")]
            if transceiver.kind in self.pads and codecs:
                self.send_codecs[transceiver.kind] = codec_name(codecs[0])
                pad = self.pads[transceiver.kind]
                pad.active = True
                pad.resync()
        self.local_sdp = self.pc.localDescription.sdp
        if self.dropped_mlines:
            self.local_sdp = _with_rejected_mlines(
                self.local_sdp, self.remote_sdp or "", self.dropped_mlines
            )
        pending, self.pending_candidates = self.pending_candidates, []
        for candidate in pending:
            try:
                await self._add_candidate(candidate)
            except KurentoError as error:
                # The negotiation succeeded: a bad early candidate must not lose its answer.
                logger.info("%s: queued ICE candidate dropped: %s", self.id, error.message)
        self._emit_candidates_if_requested()
        self.emit("MediaSessionStarted")
        return self.local_sdp

    def accepts(self, kind: str) -> Any:
        return lambda: (self.send_codecs[kind],) if kind in self.send_codecs else ()

    def on_sink_frame(self, kind: str, frame: EncodedFrame) -> None:
        if self.send_codecs.get(kind) == frame.codec:
            self.tracks[kind].put(frame)

    def _fanout_member(self, kind: str, frame: EncodedFrame, pad: SinkPad) -> Any:
        """The sender's stream, for the hub's fan-out group, when this pad's chain is pure
        forwarding: the frame goes out as is (`on_sink_frame`) to a running sender."""
        sender = self.tracks[kind].sender
        if sender is None or self.send_codecs.get(kind) != frame.codec:
            return None
        return sender.fanout_member(pad.leave_fanout)

    def request_keyframe(self, kind: str) -> None:
        for receiver in self.receivers[kind]:
            receiver.request_keyframe()

    def on_sink_data(self, message: DataMessage) -> None:
        self.data.send(message)

    def _mark_packets(self) -> None:
        """Put the qosDscp codepoint on the endpoint's ICE sockets, as KMS's ICE agent does."""
        if self.dscp is None:
            return
        for stream in self.streams:
            for protocol in stream.ice._connection._protocols:
                sock = protocol.transport.get_extra_info("socket")
                if sock is None:
                    continue
                with contextlib.suppress(OSError):
                    if sock.family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, self.dscp << 2)
                    else:
                        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, self.dscp << 2)

    # -- data channels ------------------------------------------------------------------------

    async def op_createDataChannel(
        self,
        label: str = "",
        ordered: bool = True,
        maxPacketLifeTime: int = -1,
        maxRetransmits: int = -1,
        protocol: str = "",
    ) -> None:
        self.data.create(
            label=label,
            ordered=ordered,
            max_packet_life_time=maxPacketLifeTime,
            max_retransmits=maxRetransmits,
            protocol=protocol,
        )

    async def op_closeDataChannel(self, channelId: int) -> None:
        self.data.close(channelId)

    # -- ICE ----------------------------------------------------------------------------------

    async def op_gatherCandidates(self) -> None:
        if self.gather_requested:
            return
        self.gather_requested = True
        for stream in self.streams:
            stream.gathering()
        self._emit_candidates_if_requested()

    def _emit_candidates_if_requested(self) -> None:
        """aiortc gathers while it creates the local description; the candidates go out as events
        once both that happened and the client asked for them."""
        if not self.gather_requested or self.gathering_done or self.local_sdp is None:
            return
        self.gathering_done = True
        if self.pc is None:  # every m-line was rejected: nothing to gather for
            self.emit("IceGatheringDone")
            return
        seen: set[int] = set()
        for mid, index, dtls in self._streams():
            ice_transport = dtls.transport
            if id(ice_transport) in seen:
                continue
            seen.add(id(ice_transport))
            for candidate in ice_transport.iceGatherer.getLocalCandidates():
                self.emit(
                    "IceCandidateFound",
                    candidate=complex_value(
                        "IceCandidate",
                        candidate="candidate:" + candidate_to_sdp(candidate),
                        sdpMid=mid,
                        sdpMLineIndex=self._offered_index(index),
                    ),
                )
        self.emit("IceGatheringDone")

    async def op_addIceCandidate(self, candidate: dict) -> None:
        text = candidate.get("candidate")
        mid = candidate.get("sdpMid")
        index = candidate.get("sdpMLineIndex")
        if not isinstance(text, str) or (mid is None and index is None):
            raise KurentoError(
                Code.ICE_ADD_CANDIDATE_ERROR,
                "IceCandidate needs 'candidate' and 'sdpMid' or 'sdpMLineIndex'",
            )
        if not isinstance(mid, str | None) or not (
            index is None or (isinstance(index, int) and not isinstance(index, bool))
        ):
            raise KurentoError(
                Code.ICE_ADD_CANDIDATE_ERROR,
                "IceCandidate 'sdpMid' must be a string and 'sdpMLineIndex' an integer",
            )
        if len(text) > MAX_CANDIDATE_LENGTH or (mid is not None and len(mid) > MAX_SDP_MID):
            raise too_large(
                f"ICE candidate too large (at most {MAX_CANDIDATE_LENGTH} characters, "
                f"sdpMid at most {MAX_SDP_MID})"
            )
        if text and not _CANDIDATE.match(text):
            raise KurentoError(
                Code.ICE_ADD_CANDIDATE_ERROR, f"Invalid ICE candidate '{text[:200]}'"
            )
        if not text:
            return  # an empty candidate marks the end of a generation; KMS ignores it too
        if self.remote_candidates >= MAX_REMOTE_CANDIDATES:
            raise too_many(
                f"Too many ICE candidates for this endpoint (limit {MAX_REMOTE_CANDIDATES})"
            )
        self.remote_candidates += 1
        # Only what is needed is kept: the client's object may carry anything else besides.
        kept = {"candidate": text, "sdpMid": mid, "sdpMLineIndex": index}
        if self.remote_sdp is None:
            self.pending_candidates.append(kept)
            return
        await self._add_candidate(kept)

    async def _add_candidate(self, candidate: dict[str, Any]) -> None:
        text = candidate["candidate"]
        try:
            parsed = candidate_from_sdp(text.removeprefix("a=").split(":", 1)[1])
        except (ValueError, IndexError) as exc:
            raise KurentoError(
                Code.ICE_ADD_CANDIDATE_ERROR, f"Invalid ICE candidate: {exc}"
            ) from exc
        # aioice takes any numbers and fails later, in its own tasks, on one out of range.
        if not (
            1 <= parsed.component <= 256
            and 0 <= parsed.priority < 2**32
            and 0 <= parsed.port <= 65535
            and 0 <= (parsed.relatedPort or 0) <= 65535
        ):
            raise KurentoError(
                Code.ICE_ADD_CANDIDATE_ERROR, "Invalid ICE candidate: a number out of range"
            )
        parsed.sdpMid, parsed.sdpMLineIndex = self._negotiated_stream(
            candidate["sdpMid"], candidate["sdpMLineIndex"]
        )
        if parsed.ip.endswith(".local"):
            return  # mDNS names are not resolved here; the peer's checks reach us anyway
        if self.pc is None or not any(
            parsed.sdpMid == mid or parsed.sdpMLineIndex == index
            for mid, index, _ in self._streams()
        ):
            raise KurentoError(
                Code.ICE_ADD_CANDIDATE_ERROR,
                f"No media stream for sdpMid {parsed.sdpMid!r} / index {parsed.sdpMLineIndex!r}",
            )
        try:
            await self.pc.addIceCandidate(parsed)
        except Exception as exc:
            raise KurentoError(
                Code.ICE_ADD_CANDIDATE_ERROR, f"Cannot add candidate: {exc}"
            ) from exc

    def _offered_index(self, index: int | None) -> int | None:
        """An m-line index of what aiortc negotiated, as numbered in the offer (rejected
        m-lines aiortc never saw come in between)."""
        if index is None:
            return None
        for dropped in sorted(self.dropped_mlines):
            if dropped <= index:
                index += 1
        return index

    def _negotiated_stream(self, mid: str | None, index: int | None) -> tuple[Any, Any]:
        """A candidate's sdpMid and sdpMLineIndex (as the offer numbers them) for aiortc. One
        for a rejected m-line that was in the BUNDLE group belongs to the bundle's transport
        (a browser gathers on the first m-line, its data channel maybe)."""
        if not self.dropped_mlines:
            return mid, index
        if mid is not None:
            rejected = mid in self.dropped_mlines.values()
        else:
            rejected = index in self.dropped_mlines
            mid = self.dropped_mlines.get(index) if rejected else None
        if rejected:
            streams = self._streams()
            if mid in self.bundled_rejects and streams:
                return streams[0][0], streams[0][1]
            return "", -1  # matches no stream: refused as for an unknown sdpMid
        if index is not None:
            index -= sum(1 for dropped in self.dropped_mlines if dropped < index)
        return mid, index

    def _streams(self) -> list[tuple[str | None, int | None, Any]]:
        """What aiortc negotiated, in m-line order: (mid, its index for aiortc, DTLS transport)
        of each transceiver and of the data channels' SCTP transport."""
        if self.pc is None:
            return []
        streams = [
            (t.mid, t._get_mline_index(), t.receiver.transport) for t in self.pc.getTransceivers()
        ]
        sctp = self.pc.sctp
        if sctp is not None and sctp.mid is not None:
            index = self.pc._RTCPeerConnection__sctp_mline_index  # type: ignore[attr-defined]
            streams.append((sctp.mid, index, sctp.transport))
        return sorted(streams, key=lambda stream: stream[1] if stream[1] is not None else 1 << 30)

    def _ice_servers(self) -> list[RTCIceServer]:
        servers = []
        stun = self.values["stunServerAddress"] or self.ice_defaults.stun_address
        if stun:
            port = self.values["stunServerPort"] or self.ice_defaults.stun_port
            servers.append(RTCIceServer(urls=f"stun:{stun}:{port}"))
        turn = _parse_turn_url(self.values["turnUrl"] or self.ice_defaults.turn_url)
        if turn:
            servers.append(turn)
        return servers

    # -- state --------------------------------------------------------------------------------

    def _watch_streams(self) -> None:
        """Number the peer connection's ICE transports as KMS numbers its ICE streams (from 1,
        in m-line order; one in all with BUNDLE) and report their states from now on. Runs once
        both descriptions are set, before aiortc's connection task starts checking."""
        assert self.pc is not None
        negotiated = self._streams()
        watched = {id(stream.ice) for stream in self.streams}
        for _, _, dtls in negotiated:
            ice = dtls.transport
            if id(ice) in watched:
                continue
            watched.add(id(ice))
            sharing = sum(1 for _, _, other in negotiated if other.transport is ice)
            stream = MediaStream(
                len(self.streams) + 1, ice, dtls, bundled=sharing > 1, emit=self._emit_live
            )
            self.streams.append(stream)
            if self.gather_requested:
                stream.gathering()

    def _emit_live(self, event_type: str, **payload: Any) -> None:
        """Report a transport's change, unless the endpoint is being released (closing its peer
        connection then is no news to the client)."""
        if not self.released:
            self.emit(event_type, **payload)

    async def _on_connection_state(self) -> None:
        if self.pc is None:
            return
        state = self.pc.connectionState
        if state == "connected":
            self._set_connection_state("CONNECTED")
        elif state in ("failed", "closed"):
            # The peer closed (DTLS close_notify) or cannot be reached: its media is gone for
            # good, since neither KMS nor this server restarts ICE.
            self.peer_gone = True
            self._set_connection_state("DISCONNECTED")
            self._set_media_state("DISCONNECTED")
            if state == "failed":
                self.emit(
                    "Error",
                    description="ICE/DTLS connection failed",
                    errorCode=Code.CONNECT_ERROR.value,
                    type="CONNECT_ERROR",
                )

    def check_flow(self, now: float) -> None:
        """Media flow first, then the media state, so that the first MediaFlowOutStateChanged
        comes before MediaStateChanged CONNECTED, as in KMS."""
        super().check_flow(now)
        self._set_media_state("CONNECTED" if self._peer_sends(now) else "DISCONNECTED")

    def _peer_sends(self, now: float) -> bool:
        """Whether the peer is there, KMS's way: RTP or RTCP came from it lately (a receiving
        browser sends receiver reports) over a connection that has neither closed nor failed."""
        if self.peer_gone or self.connection_state != "CONNECTED":
            return False
        heard = max(
            (
                part.last_heard_at
                for part in (*self._receivers(), *self._senders())
                if part.last_heard_at
            ),
            default=0.0,
        )
        return heard > 0 and now - heard < PEER_SILENCE_TIMEOUT

    def _receivers(self) -> list[ForwardingReceiver]:
        return [r for receivers in self.receivers.values() for r in receivers]

    def _senders(self) -> list[ForwardingSender]:
        if self.pc is None:
            return []
        return [
            t.sender for t in self.pc.getTransceivers() if isinstance(t.sender, ForwardingSender)
        ]

    # -- stats and release --------------------------------------------------------------------

    async def op_getStats(self, mediaType: str | None = None) -> dict[str, Any]:
        """The endpoint's entry, then one inbound entry per media SSRC received and one outbound
        entry per stream sent, with KMS's fields: what its RTP session counts, read here from
        aiortc's receive statistics and the forwarding receivers' and senders' counters."""
        stats = await super().op_getStats(mediaType)
        if self.pc is None:
            return stats
        wanted = {k for t, k in MEDIA_KINDS.items() if mediaType in (None, t)}
        millis = int(time.time() * 1000)
        if mediaType in (None, "DATA"):
            stats.update(self.data.stats(millis))
        # aiortc reports every SSRC of a receiver under one stats id, so a retransmission stream
        # would hide the media stream: read the receivers' per-SSRC statistics instead.
        for kind in wanted:
            for receiver in self.receivers[kind]:
                feedback = receiver.feedback_sent
                for ssrc, stream in receiver.media_streams().items():
                    stats_id = f"{self.id}_inboundrtp_{ssrc}"
                    stats[stats_id] = _rtp_stream_stats(
                        "RTCInboundRTPStreamStats",
                        stats_id,
                        "inboundrtp",
                        millis,
                        ssrc,
                        feedback,
                        packetsLost=stream.packets_lost,
                        fractionLost=float(receiver.fraction_lost(stream)),
                        packetsReceived=stream.packets_received,
                        bytesReceived=receiver.octets_received.get(ssrc, 0),
                        jitter=receiver.jitter_seconds(stream),
                    )
        now = time.monotonic()
        for sender in self._senders():
            if sender.kind not in wanted or sender.writer is None:
                continue
            stats_id = f"{self.id}_outboundrtp_{sender._ssrc}"
            stats[stats_id] = _rtp_stream_stats(
                "RTCOutboundRTPStreamStats",
                stats_id,
                "outboundrtp",
                millis,
                sender._ssrc,
                sender.feedback_received,
                packetsLost=sender.packets_lost,
                fractionLost=float(sender.fraction_lost),
                packetsSent=sender._RTCRtpSender__packet_count,
                bytesSent=sender._RTCRtpSender__octet_count,
                targetBitrate=float(sender.bitrate.current(now)),
                roundTripTime=sender.round_trip_time,
            )
        return stats

    async def on_release(self) -> None:
        await super().on_release()
        self.data.stop()
        for track in self.tracks.values():
            track.stop()
        if self.pc is not None:
            pc, self.pc = self.pc, None
            await pc.close()


def _rtp_stream_stats(
    type_name: str,
    stats_id: str,
    stats_type: str,
    millis: int,
    ssrc: int,
    feedback: RtcpFeedback,
    **fields: Any,
) -> dict[str, Any]:
    """An RTP stream's stats as KMS fills them: the fields it leaves empty or zero (ids of other
    stats, SLI) are there too, and `fractionLost` is RTCP's value in 1/256, not a fraction."""
    return complex_value(
        type_name,
        id=stats_id,
        type=stats_type,
        timestampMillis=millis,
        ssrc=str(ssrc),
        associateStatsId="",
        isRemote=False,
        mediaTrackId="",
        transportId="",
        codecId="",
        firCount=feedback.fir,
        pliCount=feedback.pli,
        nackCount=feedback.nack,
        sliCount=0,
        remb=feedback.remb,
        **fields,
    )


def parse_sdp(sdp: str, kind: str) -> SessionDescription:
    if not sdp.strip() or len(sdp) > 256 * 1024:
        raise KurentoError(Code.SDP_PARSE_ERROR, f"Error parsing SDP {kind}: empty or too long")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:
        raise KurentoError(Code.SDP_PARSE_ERROR, f"Error parsing SDP {kind}: {exc}") from exc
    if not parsed.media:
        raise KurentoError(Code.SDP_PARSE_ERROR, f"Error parsing SDP {kind}: no media sections")
    return parsed


def _check_transport(parsed: SessionDescription, code: Code, kind: str) -> None:
    """Refuse an offer or answer whose WebRTC sections cannot connect: without ICE credentials
    no check succeeds, and without a DTLS role and a fingerprint (at session or media level;
    aiortc copies the session's into each section) the DTLS handshake cannot be verified, so
    the endpoint would wait forever for media."""
    for media in parsed.media:
        if _rejected(media):
            continue
        section = f"media '{media.kind}'" + (f" (mid {media.rtp.muxId})" if media.rtp.muxId else "")
        missing = []
        if not media.ice.usernameFragment or not media.ice.password:
            missing.append("ICE credentials (a=ice-ufrag and a=ice-pwd)")
        if media.dtls is None:
            missing.append("a DTLS role (a=setup)")
        elif not any(
            f.algorithm.lower() in X509_DIGEST_ALGORITHMS for f in media.dtls.fingerprints
        ):
            hashes = ", ".join(X509_DIGEST_ALGORITHMS)
            missing.append(f"a DTLS fingerprint (a=fingerprint with {hashes})")
        if missing:
            raise KurentoError(
                code, f"Error processing {kind}: {section} lacks {' and '.join(missing)}"
            )


def _rejected(media: Any) -> bool:
    """An audio or video m-line KMS's WebRtcEndpoint has no handler for: its handler takes
    RTP/SAVPF and UDP/TLS/RTP/SAVPF only (kmssdprtpsavpfmediahandler.c)."""
    return media.kind in _KINDS and not media.profile.upper().endswith("RTP/SAVPF")


def _rejecting_answer(offer: SessionDescription) -> str:
    """The answer KMS's SDP agent writes when it rejects every m-line (its reject handler): the
    offered media, proto and formats, port 0, inactive, the mid echoed."""
    version = int(time.time())
    lines = [
        "v=0",
        f"o=- {version} {version} IN IP4 0.0.0.0",
        "s=Kurento Media Server",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
    ]
    for media in offer.media:
        lines.append(f"m={media.kind} 0 {media.profile} {' '.join(map(str, media.fmt))}")
        lines.append("a=inactive")
        if media.rtp.muxId:
            lines.append(f"a=mid:{media.rtp.muxId}")
    return "\r\n".join(lines) + "\r\n"


def _data_accepted(pc: RTCPeerConnection) -> bool:
    """Whether both descriptions keep the application m-line (a port of 0 rejects it)."""
    for description in (pc.localDescription, pc.remoteDescription):
        if description is None:
            return False
        parsed = SessionDescription.parse(description.sdp)
        if not any(m.kind == "application" and m.port != 0 for m in parsed.media):
            return False
    return True


def _mline_blocks(sdp: str) -> tuple[list[str], list[list[str]]]:
    """An SDP's session lines and its m-sections' lines."""
    session: list[str] = []
    blocks: list[list[str]] = []
    for line in sdp.splitlines():
        if not line:
            continue
        if line.startswith("m="):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
        else:
            session.append(line)
    return session, blocks


def _join(session: list[str], blocks: list[list[str]]) -> str:
    return "\r\n".join([*session, *(line for block in blocks for line in block)]) + "\r\n"


def _without_mlines(offer: str, dropped: list[int], parsed: SessionDescription) -> str:
    """The offer as aiortc gets it: without the m-lines rejected beforehand, nor their mids in
    its BUNDLE group."""
    session, blocks = _mline_blocks(offer)
    gone = {parsed.media[i].rtp.muxId for i in dropped} - {None}
    kept_session = []
    for line in session:
        if line.startswith("a=group:BUNDLE"):
            items = [i for i in line.split()[1:] if i not in gone]
            line = " ".join(["a=group:BUNDLE", *items])
        kept_session.append(line)
    return _join(kept_session, [b for i, b in enumerate(blocks) if i not in dropped])


def _with_rejected_mlines(answer: str, offer: str, dropped: dict[int, str | None]) -> str:
    """aiortc's answer with each m-line rejected beforehand back at its place, as KMS's reject
    handler writes it: the offered media, proto and formats, port 0, inactive. Unlike KMS (no
    a=mid there), its mid is kept, as JSEP and browsers want, and its transport attributes are
    the bundle's, which aiortc peers insist on; it stays out of the BUNDLE group."""
    session, blocks = _mline_blocks(answer)
    _, offered = _mline_blocks(offer)
    transport = [
        line
        for line in (blocks[0] if blocks else [])
        if line.startswith(("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=setup:"))
    ]
    for index in sorted(dropped):
        media, _port, proto_and_formats = offered[index][0].split(" ", 2)
        rejected = [f"{media} 0 {proto_and_formats}", "c=IN IP4 0.0.0.0", "a=inactive"]
        if dropped[index] is not None:
            rejected.append(f"a=mid:{dropped[index]}")
        blocks.insert(min(index, len(blocks)), rejected + transport)
    return _join(session, blocks)


def _parse_turn_url(value: str) -> RTCIceServer | None:
    """KMS's turnUrl, `user:password@host:port[?transport=udp|tcp|tls]`, as an ICE server."""
    match = re.fullmatch(
        r"(?P<user>[^:@]+):(?P<password>[^@]+)@(?P<host>[^:?]+)(:(?P<port>\d+))?"
        r"(\?transport=(?P<transport>udp|tcp|tls))?",
        value or "",
    )
    if match is None:
        return None
    transport = match["transport"] or "udp"
    scheme = "turns" if transport == "tls" else "turn"
    port = match["port"] or ("5349" if transport == "tls" else "3478")
    wire = "tcp" if transport == "tls" else transport
    return RTCIceServer(
        urls=f"{scheme}:{match['host']}:{port}?transport={wire}",
        username=match["user"],
        credential=match["password"],
    )


def _answer_as_dtls_server(pc: RTCPeerConnection, offer: SessionDescription) -> None:
    """Answer an `a=setup:actpass` offer with `passive`: the endpoint is then the DTLS server,
    and the DTLS server chooses the SRTP profile. As the client (aiortc's default answer,
    `active`) the browser chose, and Chromium prefers AES_CM_128_HMAC_SHA1_80 to the AES-GCM
    profiles it also offers, which cost the fan-out send path less per packet. An offer that
    says `active` or `passive` keeps the role it leaves the endpoint."""
    if not offer.media or any(m.dtls is None or m.dtls.role != "auto" for m in offer.media):
        return
    transports = {t.receiver.transport for t in pc.getTransceivers()}
    if pc.sctp is not None:
        transports.add(pc.sctp.transport)
    for transport in transports:
        if transport._role == "auto":
            transport._set_role("server")
