"""RtpEndpoint: media with a plain RTP peer (RTP/AVP(F)), or an SRTP one keyed by SDES
(RTP/SAVP(F) with `a=crypto`), negotiated by SDP as KMS's RtpEndpoint does it: processOffer, or
generateOffer then processAnswer, once; one audio and one video stream, RTCP on the next port.

Each stream is an `RtpSession` (rtp_session.py): what the peer sends becomes encoded frames in
the element's hubs, what reaches the element's pads goes to the peer, in the codec negotiated
(a video source in the other codec is transcoded by its hub, as for a WebRtcEndpoint).
"""

from __future__ import annotations

import logging
from typing import Any

from .elements import MediaPipeline
from .errors import Code, KurentoError
from .forwarding import codec_name
from .frames import EncodedFrame
from .objects import Param, Registry
from .rtp_sdp import (
    KINDS,
    OFFERED_CODECS,
    LocalMedia,
    RemoteMedia,
    Sdes,
    answer_direction,
    parse_remote,
    write_sdp,
)
from .rtp_session import Remote, RtpSession, SrtpKeys, closing, open_session
from .webrtc import PEER_SILENCE_TIMEOUT, BaseRtpEndpoint, parse_sdp

logger = logging.getLogger(__name__)

_SDES_TAG = 1  # the tag of the one `a=crypto` line this endpoint offers


class RtpEndpoint(BaseRtpEndpoint):
    TYPE = "RtpEndpoint"
    ABSTRACT = False
    MODULE_NAME = "elements"
    CONSTRUCTOR = (
        Param("mediaPipeline", "MediaPipeline"),
        Param("crypto", "SDES", optional=True),
        Param("useIpv6", "boolean", optional=True),
    )
    EVENTS = frozenset({"OnKeySoftLimit"})

    def __init__(
        self,
        registry: Registry,
        pipeline: MediaPipeline,
        *,
        address: str | None,
        announced: str | None = None,
        port_range: tuple[int, int] = (0, 0),
        sdes: Sdes | None = None,
    ) -> None:
        super().__init__(registry, pipeline)
        self.address = address  # None: no address of the family asked for (useIpv6)
        self.announced = announced or address
        self.port_range = port_range
        self.sdes = sdes
        self.sessions: dict[str, RtpSession] = {}
        self.local: list[LocalMedia] = []
        self.send_codecs: dict[str, str] = {}

    # -- negotiation -----------------------------------------------------------------------------

    async def generate_offer(self, options: dict) -> str:
        kinds = [k for k in KINDS if options.get(f"offerToReceive{k.capitalize()}", True)]
        code = Code.SDP_END_POINT_GENERATE_OFFER_ERROR
        for kind in kinds:
            session = await self._open(kind, code)
            codecs = OFFERED_CODECS[kind]
            self.local.append(
                self._local_media(session, codecs, "sendrecv", self._profile(), _SDES_TAG)
            )
        self.offer_generated = True
        self.local_sdp = write_sdp(self._announced(code), self.local)
        return self.local_sdp

    async def process_offer(self, offer: str) -> str:
        code = Code.SDP_END_POINT_PROCESS_OFFER_ERROR
        remotes = parse_remote(parse_sdp(offer, "offer"), offer, self.sdes is not None)
        address = self._announced(code)
        try:
            for remote in remotes:
                self.local.append(await self._answer_media(remote, code))
        except KurentoError:
            self._close_sessions()
            raise
        for local, remote in zip(self.local, remotes, strict=True):
            if local.port:
                self._start(local, remote)
        self.remote_sdp = offer
        self.local_sdp = write_sdp(address, self.local)
        self._negotiated()
        return self.local_sdp

    async def process_answer(self, answer: str) -> str:
        code = Code.SDP_END_POINT_PROCESS_ANSWER_ERROR
        remotes = parse_remote(parse_sdp(answer, "answer"), answer, self.sdes is not None)
        if [r.kind for r in remotes] != [m.kind for m in self.local]:
            raise KurentoError(code, "Error processing answer: its media do not match the offer's")
        for remote in remotes:
            if remote.port and not remote.codecs:
                raise KurentoError(code, f"Error processing answer: no codec for {remote.kind}")
            if remote.port and self.sdes is not None and self._remote_key(remote) is None:
                raise KurentoError(
                    code, f"Error processing answer: no matching a=crypto for {remote.kind}"
                )
        for local, remote in zip(self.local, remotes, strict=True):
            if remote.port:
                local.codecs = remote.codecs
                self._start(local, remote)
        self.remote_sdp = answer
        self._negotiated()
        return self.local_sdp or ""

    def _profile(self) -> str:
        """What KMS's RtpEndpoint offers: AVPF, or SAVPF with SDES."""
        return "RTP/SAVPF" if self.sdes is not None else "RTP/AVPF"

    def _announced(self, code: Code) -> str:
        if self.announced is None:
            raise KurentoError(code, "No IPv6 address is configured for RTP (useIpv6)")
        return self.announced

    async def _open(self, kind: str, code: Code) -> RtpSession:
        if self.address is None:
            raise KurentoError(code, "No IPv6 address is configured for RTP (useIpv6)")
        try:
            session = await open_session(kind, self.address, *self.port_range)
        except OSError as exc:
            raise KurentoError(code, f"Cannot open RTP sockets: {exc}") from exc
        self.sessions[kind] = session
        return session

    def _local_media(
        self, session: RtpSession, codecs: list, direction: str, profile: str, tag: int
    ) -> LocalMedia:
        crypto = (tag, self.sdes.suite, self.sdes.key) if self.sdes is not None else None
        return LocalMedia(
            kind=session.kind,
            port=session.rtp_port,
            rtcp_port=session.rtcp_port,
            codecs=list(codecs),
            direction=direction,
            ssrc=session.ssrc,
            profile=profile,
            formats=[c.payloadType for c in codecs],
            crypto=crypto,
        )

    async def _answer_media(self, remote: RemoteMedia, code: Code) -> LocalMedia:
        """This endpoint's answer to one offered m-line: taken, or rejected (port 0) when its
        profile, codecs or keys do not fit or its kind already has a stream."""
        key = self._remote_key(remote) if self.sdes is not None else None
        if (
            not remote.port
            or not remote.codecs
            or remote.kind in self.sessions
            or (self.sdes is not None and key is None)
        ):
            return LocalMedia(remote.kind, 0, 0, [], "inactive", 0, remote.profile, remote.formats)
        session = await self._open(remote.kind, code)
        tag = key[0] if key is not None else _SDES_TAG
        media = self._local_media(
            session, remote.codecs, answer_direction(remote.direction), remote.profile, tag
        )
        return media

    def _remote_key(self, remote: RemoteMedia) -> tuple[int, str, bytes] | None:
        """The peer's key for this endpoint's suite (KMS also wants the offerer's tag)."""
        assert self.sdes is not None
        return next((c for c in remote.crypto if c[1] == self.sdes.suite), None)

    def _start(self, local: LocalMedia, remote: RemoteMedia) -> None:
        session = self.sessions[local.kind]
        srtp = None
        if self.sdes is not None:
            key = self._remote_key(remote)
            assert key is not None
            srtp = SrtpKeys(self.sdes.profile, self.sdes.key, key[2])
        address = remote.address if remote.address not in (None, "0.0.0.0", "::") else None
        peer = None
        if address is not None and not remote.comedia:
            peer = Remote(address, remote.port, remote.rtcp_port)
        sends = remote.receives and local.direction in ("sendrecv", "sendonly")
        session.on_frame = self.hubs[local.kind].push
        session.on_keyframe_request = self.pads[local.kind].request_keyframe
        session.start(
            remote=peer, comedia=remote.comedia, codecs=local.codecs, send=sends, srtp=srtp
        )
        if sends and session.send_codec is not None:
            self.send_codecs[local.kind] = codec_name(session.send_codec)
            pad = self.pads[local.kind]
            pad.active = True
            pad.resync()

    def _negotiated(self) -> None:
        self._set_connection_state("CONNECTED")
        self.emit("MediaSessionStarted")

    # -- media -----------------------------------------------------------------------------------

    def accepts(self, kind: str) -> Any:
        return lambda: (self.send_codecs[kind],) if kind in self.send_codecs else ()

    def on_sink_frame(self, kind: str, frame: EncodedFrame) -> None:
        session = self.sessions.get(kind)
        if session is not None and self.send_codecs.get(kind) == frame.codec:
            session.send_frame(frame)

    def request_keyframe(self, kind: str) -> None:
        session = self.sessions.get(kind)
        if session is not None:
            session.request_keyframe()

    # -- state -----------------------------------------------------------------------------------

    def check_flow(self, now: float) -> None:
        """Flow first, then the media state: CONNECTED while the peer sends RTP or RTCP."""
        super().check_flow(now)
        heard = max((s.last_heard_at for s in self.sessions.values()), default=0.0)
        connected = heard > 0 and now - heard < PEER_SILENCE_TIMEOUT
        self._set_media_state("CONNECTED" if connected else "DISCONNECTED")

    def _close_sessions(self) -> None:
        closing(self.sessions)
        self.local.clear()

    async def on_release(self) -> None:
        await super().on_release()
        self._close_sessions()
