"""The encoded frame that travels through the forwarding plane.

Its own module because both the forwarding plane (forwarding.py), which receives and fans frames
out, and the transcoder (transcoding.py), which makes new frames from old ones, need it: neither
has to import the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av

from .rtp_send import Packetizer, RtpFrame


@dataclass(slots=True)
class EncodedFrame:
    """One encoded audio or video frame as it travels from a hub to its sinks."""

    packet: av.Packet
    codec: str  # lower-case codec name: "vp8", "h264", "opus", "pcmu"...
    keyframe: bool
    packetizer: Packetizer  # the stream's, shared by every frame of it
    # When the sender captured it, in seconds of the sender's wall clock (from its RTCP sender
    # reports; None until the first one). Audio and video of one sender share that clock.
    captured: float | None = None
    _rtp: RtpFrame | None = field(default=None, init=False, repr=False)

    def rtp(self) -> RtpFrame:
        """The frame as RTP payloads, packetized on first use and shared by every sink."""
        if self._rtp is None:
            self._rtp = self.packetizer.pack(self.packet)
        return self._rtp
