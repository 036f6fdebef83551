"""The SDP of an RtpEndpoint, in the shape KMS's RtpEndpoint writes and reads it: plain RTP
(RTP/AVP, RTP/AVPF) or SRTP keyed by SDES (RTP/SAVP, RTP/SAVPF with `a=crypto`), no ICE, no
BUNDLE, no rtcp-mux (KMS turns both off for RTP): RTCP goes to the RTP port + 1, or to `a=rtcp`.

KMS's RtpEndpoint takes only one family of profiles: SAVP(F) when it was created with `crypto`,
AVP(F) otherwise; a section of the other family, or with no codec in common, is rejected in the
answer (port 0), as its SDP agent does.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.sdp import SessionDescription

from .errors import Code, KurentoError, marshall_error

# KMS's CryptoSuite names, the SDES names on the wire (RFC 4568), libsrtp's profile and the size
# of the master key plus salt. pylibsrtp has no AES-256 counter-mode profile, so those two of
# KMS's four suites are refused.
CRYPTO_SUITES: dict[str, tuple[str, int, int]] = {
    "AES_128_CM_HMAC_SHA1_32": (
        "AES_CM_128_HMAC_SHA1_32",
        pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
        30,
    ),
    "AES_128_CM_HMAC_SHA1_80": (
        "AES_CM_128_HMAC_SHA1_80",
        pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        30,
    ),
}
UNSUPPORTED_SUITES = ("AES_256_CM_HMAC_SHA1_32", "AES_256_CM_HMAC_SHA1_80")
_WIRE_SUITES = {wire: name for name, (wire, _, _) in CRYPTO_SUITES.items()}
_CRYPTO = re.compile(r"^(\d+) (\S+) inline:([A-Za-z0-9+/=]+)")

# What the endpoint offers, in order of preference (payload types as KMS numbers them).
_FEEDBACK = [
    RTCRtcpFeedback(type="nack"),
    RTCRtcpFeedback(type="nack", parameter="pli"),
    RTCRtcpFeedback(type="ccm", parameter="fir"),
]
OFFERED_CODECS: dict[str, list[RTCRtpCodecParameters]] = {
    "audio": [
        RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96),
        RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=0),
        RTCRtpCodecParameters(mimeType="audio/PCMA", clockRate=8000, channels=1, payloadType=8),
    ],
    "video": [
        RTCRtpCodecParameters(
            mimeType="video/VP8", clockRate=90000, payloadType=101, rtcpFeedback=_FEEDBACK
        ),
        RTCRtpCodecParameters(
            mimeType="video/H264",
            clockRate=90000,
            payloadType=102,
            rtcpFeedback=_FEEDBACK,
            parameters={
                "level-asymmetry-allowed": 1,
                "packetization-mode": 1,
                "profile-level-id": "42e01f",
            },
        ),
    ],
}
# Static payload types an offer may use without `a=rtpmap` (RFC 3551).
_STATIC = {
    0: RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=0),
    8: RTCRtpCodecParameters(mimeType="audio/PCMA", clockRate=8000, channels=1, payloadType=8),
}
KINDS = ("audio", "video")
_DIRECTIONS = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


@dataclass(frozen=True)
class Sdes:
    """An RtpEndpoint's SRTP settings (Kurento's SDES): the suite and its own master key."""

    suite: str
    key: bytes = field(repr=False)  # master key and salt

    @property
    def profile(self) -> int:
        return CRYPTO_SUITES[self.suite][1]


def sdes_param(value: Any) -> Sdes | None:
    """The `crypto` constructor parameter as KMS checks it (RtpEndpointImpl): no suite means
    plain RTP; a suite without a key gets a random one; `key` is the raw key and salt,
    `keyBase64` the same in Base64, and either must be exactly as long as the suite needs.
    A wrong type or an unknown suite is 40001, a bad key 40107."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise marshall_error("'crypto' parameter should be an SDES object")
    suite = value.get("crypto")
    if suite is None:
        return None
    if suite in UNSUPPORTED_SUITES:
        raise KurentoError(
            Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR,
            f"Crypto suite {suite} is not supported by this server (AES-128 suites only)",
        )
    if suite not in CRYPTO_SUITES:
        raise marshall_error(f"Invalid value for 'CryptoSuite': '{suite}'")
    size = CRYPTO_SUITES[suite][2]
    key, key_base64 = value.get("key"), value.get("keyBase64")
    if not isinstance(key, str | None) or not isinstance(key_base64, str | None):
        raise marshall_error("'key' and 'keyBase64' should be strings")
    if key is not None:
        raw = key.encode("latin-1", errors="replace")
    elif key_base64 is not None:
        try:
            raw = base64.b64decode(key_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KurentoError(
                Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR, "Master key is not valid Base64"
            ) from exc
    else:
        return Sdes(suite, secrets.token_bytes(size))
    if len(raw) != size:
        raise KurentoError(Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR, "Master key size is wrong")
    return Sdes(suite, raw)


@dataclass
class LocalMedia:
    """One m-line this endpoint writes."""

    kind: str
    port: int  # 0: rejected
    rtcp_port: int
    codecs: list[RTCRtpCodecParameters]
    direction: str
    ssrc: int
    profile: str
    formats: list[int | str]
    crypto: tuple[int, str, bytes] | None = None  # tag, SDES suite (KMS name), key


@dataclass
class RemoteMedia:
    """One m-line of the peer's SDP, as far as this endpoint needs it."""

    kind: str
    profile: str
    formats: list[int | str]
    port: int
    address: str | None
    rtcp_port: int
    direction: str
    codecs: list[RTCRtpCodecParameters]  # the ones this endpoint has, in the peer's order
    crypto: list[tuple[int, str, bytes]]  # tag, suite (KMS name), key, for suites known here
    comedia: bool  # `a=direction:active`: the peer's address is learned from what it sends

    @property
    def receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")


def parse_remote(sdp: SessionDescription, text: str, secure: bool) -> list[RemoteMedia]:
    """The peer's m-lines; `secure`: whether this endpoint speaks SRTP (then only SAVP(F)
    sections can be taken, otherwise only AVP(F) ones)."""
    sections = _raw_sections(text)
    session_direction = next(
        (d for d in ("sendrecv", "sendonly", "recvonly", "inactive") if f"a={d}" in sections[0]),
        "sendrecv",
    )
    medias = []
    for media, raw in zip(sdp.media, sections[1:], strict=False):
        codecs = [c for c in _offered_codecs(media) if _supported(c, media.kind)]
        crypto = [c for line in raw if (c := _crypto(line)) is not None]
        profile = media.profile.upper()
        usable_profile = profile in (
            ("RTP/SAVP", "RTP/SAVPF") if secure else ("RTP/AVP", "RTP/AVPF")
        )
        medias.append(
            RemoteMedia(
                kind=media.kind,
                profile=media.profile,
                formats=list(media.fmt),
                port=media.port if usable_profile and media.kind in KINDS else 0,
                address=media.host or sdp.host,
                rtcp_port=media.rtcp_port or media.port + 1,
                direction=media.direction or session_direction,
                codecs=codecs,
                crypto=crypto,
                comedia="a=direction:active" in raw,
            )
        )
    return medias


def _raw_sections(text: str) -> list[list[str]]:
    """The SDP's lines, split into the session part and one part per m-line."""
    sections: list[list[str]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def _offered_codecs(media: Any) -> list[RTCRtpCodecParameters]:
    mapped = {c.payloadType: c for c in media.rtp.codecs}
    return [
        mapped.get(pt) or _STATIC[pt]
        for pt in media.fmt
        if isinstance(pt, int) and (pt in mapped or pt in _STATIC)
    ]


def _supported(codec: RTCRtpCodecParameters, kind: str) -> bool:
    if not codec.mimeType.lower().startswith(f"{kind}/"):
        return False
    return any(
        c.mimeType.lower() == codec.mimeType.lower() and c.clockRate == codec.clockRate
        for c in OFFERED_CODECS.get(kind, ())
    )


def _crypto(line: str) -> tuple[int, str, bytes] | None:
    if not line.startswith("a=crypto:"):
        return None
    match = _CRYPTO.match(line.removeprefix("a=crypto:"))
    if match is None or match[2] not in _WIRE_SUITES:
        return None
    suite = _WIRE_SUITES[match[2]]
    try:
        key = base64.b64decode(match[3].split("|")[0] + "==")
    except (binascii.Error, ValueError):
        return None
    if len(key) != CRYPTO_SUITES[suite][2]:
        return None
    return int(match[1]), suite, key


def answer_direction(offered: str) -> str:
    return _DIRECTIONS.get(offered, "sendrecv")


def write_sdp(address: str, medias: list[LocalMedia], session_version: int | None = None) -> str:
    """The SDP this endpoint sends: KMS's session lines, then each m-line with its RTCP port,
    codecs, direction, mid, SSRC and, with SRTP, the key."""
    version = session_version or int(time.time())
    family = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=- {version} {version} IN {family} {address}",
        "s=Kurento Media Server",
        f"c=IN {family} {address}",
        "t=0 0",
    ]
    for index, media in enumerate(medias):
        formats = " ".join(str(f) for f in media.formats)
        lines.append(f"m={media.kind} {media.port} {media.profile} {formats}")
        if media.port == 0:
            lines.append("a=inactive")
            continue
        for codec in media.codecs:
            name = codec.mimeType.split("/", 1)[1]
            channels = f"/{codec.channels}" if codec.channels and codec.channels > 1 else ""
            lines.append(f"a=rtpmap:{codec.payloadType} {name}/{codec.clockRate}{channels}")
            if codec.parameters:
                parameters = ";".join(
                    f"{k}={v}" if v is not None else k for k, v in codec.parameters.items()
                )
                lines.append(f"a=fmtp:{codec.payloadType} {parameters}")
            for feedback in codec.rtcpFeedback:
                value = " ".join(filter(None, (feedback.type, feedback.parameter)))
                lines.append(f"a=rtcp-fb:{codec.payloadType} {value}")
        lines.append(f"a=rtcp:{media.rtcp_port}")
        if media.crypto is not None:
            tag, suite, key = media.crypto
            wire = CRYPTO_SUITES[suite][0]
            lines.append(f"a=crypto:{tag} {wire} inline:{base64.b64encode(key).decode()}")
        lines.append(f"a={media.direction}")
        lines.append(f"a=mid:{media.kind}{index}")
        lines.append(f"a=ssrc:{media.ssrc} cname:kurento-rtp")
    return "\r\n".join(lines) + "\r\n"
