"""A WebRtcEndpoint's SCTP data channels, wired to the element's DATA pads as KMS's WebRTC session
wires them: one channel at a time carries the element's data (KMS kmswebrtcsession.c allows one
and closes any other as soon as it opens, without an event), messages keep their kind (text or
binary) on the way through, and the counters KMS reports in getStats are kept here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection

from .errors import Code, KurentoError, invalid_params, too_large, too_many
from .limits import (
    MAX_DATA_BUFFERED_BYTES,
    MAX_DATA_CHANNEL_LABEL,
    MAX_DATA_CHANNELS,
    MAX_DATA_MESSAGE_BYTES,
)
from .objects import complex_value

logger = logging.getLogger(__name__)

DataMessage = str | bytes
# KMS clamps partial-reliability values to 16 bits (kmswebrtcdatachannelbin.c).
_MAX_RELIABILITY = 65535
_MAX_STREAM_ID = 65534  # 65535 is reserved (RFC 8831)


@dataclass
class ChannelCounters:
    """What KMS's RTCDataChannelStats counts for one channel."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0


def _size(message: DataMessage) -> int:
    return len(message.encode() if isinstance(message, str) else message)


class DataChannels:
    """The data channels of one peer connection. `emit` reports DataChannelOpened/Closed for the
    channel wired to the element; `deliver` takes each message that channel receives (the
    element's DATA output)."""

    def __init__(
        self,
        owner_id: str,
        emit: Callable[..., None],
        deliver: Callable[[DataMessage], None],
    ) -> None:
        self.owner_id = owner_id
        self.emit = emit
        self.deliver = deliver
        self.pc: RTCPeerConnection | None = None
        self.channels: dict[int, tuple[RTCDataChannel, ChannelCounters]] = {}  # by id(channel)
        self.wired: RTCDataChannel | None = None
        self.opened = 0
        self.closed = 0
        self.stopped = False

    @property
    def supported(self) -> bool:
        """Whether an application m-line was negotiated (KMS: its data session exists)."""
        return self.pc is not None and self.pc.sctp is not None

    def attach(self, pc: RTCPeerConnection) -> None:
        """Start serving the channels of a negotiated peer connection."""
        self.pc = pc
        pc.on("datachannel", self._track)

    # -- operations ---------------------------------------------------------------------------

    def create(
        self,
        *,
        label: str,
        ordered: bool,
        max_packet_life_time: int,
        max_retransmits: int,
        protocol: str,
    ) -> None:
        """Open a channel from this side; KMS's rules: negative reliability values mean "not
        set", both set is refused, values past 16 bits are clamped. Before the SCTP association
        is up the channel waits for it (as KMS keeps it pending)."""
        self._check_supported()
        if len(label) > MAX_DATA_CHANNEL_LABEL or len(protocol) > MAX_DATA_CHANNEL_LABEL:
            raise too_large(
                f"Data channel label and protocol take at most {MAX_DATA_CHANNEL_LABEL} characters"
            )
        life_time = None if max_packet_life_time < 0 else min(max_packet_life_time, 65535)
        retransmits = None if max_retransmits < 0 else min(max_retransmits, _MAX_RELIABILITY)
        if life_time is not None and retransmits is not None:
            raise invalid_params(
                "Syntax error: maxPacketLifeTime and maxRetransmits cannot both be set"
            )
        if len(self.channels) >= MAX_DATA_CHANNELS:
            raise too_many(f"Too many data channels on this endpoint (limit {MAX_DATA_CHANNELS})")
        assert self.pc is not None
        channel = self.pc.createDataChannel(
            label,
            maxPacketLifeTime=life_time,
            maxRetransmits=retransmits,
            ordered=ordered,
            protocol=protocol,
        )
        self._track(channel)

    def close(self, channel_id: int) -> None:
        """Close the channel with this SCTP stream id. As in KMS, an id with no open channel is
        no error (closing is idempotent); an id no SCTP stream can have is."""
        self._check_supported()
        if not 0 <= channel_id <= _MAX_STREAM_ID:
            raise invalid_params(
                f"Invalid data channel id {channel_id} (an SCTP stream id, 0 to {_MAX_STREAM_ID})"
            )
        for channel, _ in tuple(self.channels.values()):
            if channel.id == channel_id:
                channel.close()
                return
        logger.info("%s: no data channel %d to close", self.owner_id, channel_id)

    def send(self, message: DataMessage) -> None:
        """A message from the element's DATA sink, out on the wired channel (KMS also sends on a
        channel still waiting for the peer's acknowledgement); dropped when there is none, when
        it is too large, or when the peer is not reading fast enough."""
        channel = self.wired
        if channel is None or channel.readyState not in ("connecting", "open"):
            return
        size = _size(message)
        if size > MAX_DATA_MESSAGE_BYTES or channel.bufferedAmount > MAX_DATA_BUFFERED_BYTES:
            logger.info("%s: data message of %d bytes dropped", self.owner_id, size)
            return
        try:
            channel.send(message)
        except Exception as exc:  # the peer's max-message-size, a channel closing meanwhile
            logger.info("%s: data message not sent: %s", self.owner_id, exc)
            return
        counters = self.channels[id(channel)][1]
        counters.messages_sent += 1
        counters.bytes_sent += size

    def stop(self) -> None:
        """The endpoint is released: no more events; closing the peer connection ends them."""
        self.stopped = True
        self.wired = None
        for channel, _ in self.channels.values():
            channel.remove_all_listeners()
        self.channels.clear()

    def _check_supported(self) -> None:
        if not self.supported:
            raise KurentoError(
                Code.MEDIA_OBJECT_OPERATION_NOT_SUPPORTED, "Data channels are not supported"
            )

    # -- channel events -----------------------------------------------------------------------

    def _track(self, channel: RTCDataChannel) -> None:
        if self.stopped:
            channel.close()
            return
        if len(self.channels) >= MAX_DATA_CHANNELS:
            channel.close()
            return
        self.channels[id(channel)] = (channel, ChannelCounters())
        channel.on("open", lambda: self._opened(channel))
        channel.on("close", lambda: self._closed(channel))
        channel.on("message", lambda message: self._received(channel, message))
        if channel.readyState == "open":  # opened by the peer: announced already open
            self._opened(channel)

    def _opened(self, channel: RTCDataChannel) -> None:
        self.opened += 1
        if self.wired is not None:
            # KMS's session takes one data channel; another is closed, unannounced.
            logger.info("%s: data channel %s closed (one at a time)", self.owner_id, channel.id)
            channel.close()
            return
        self.wired = channel
        self.emit("DataChannelOpened", channelId=channel.id)

    def _closed(self, channel: RTCDataChannel) -> None:
        if self.channels.pop(id(channel), None) is None:
            return
        self.closed += 1
        if channel is self.wired:
            self.wired = None
            self.emit("DataChannelClosed", channelId=channel.id)

    def _received(self, channel: RTCDataChannel, message: DataMessage) -> None:
        entry = self.channels.get(id(channel))
        if entry is None or channel is not self.wired:
            return
        size = _size(message)
        entry[1].messages_received += 1
        entry[1].bytes_received += size
        if size > MAX_DATA_MESSAGE_BYTES:
            logger.info("%s: data message of %d bytes dropped", self.owner_id, size)
            return
        self.deliver(message)

    # -- stats --------------------------------------------------------------------------------

    def stats(self, millis: int) -> dict[str, Any]:
        """KMS's entries: one RTCDataChannelStats per channel, one RTCPeerConnectionStats."""
        if not self.supported:
            return {}
        entries: dict[str, Any] = {}
        for channel, counters in self.channels.values():
            stats_id = f"{self.owner_id}_datachannel_{id(channel):x}"
            entries[stats_id] = complex_value(
                "RTCDataChannelStats",
                id=stats_id,
                type="datachannel",
                timestampMillis=millis,
                label=channel.label,
                protocol=channel.protocol,
                datachannelid=channel.id if channel.id is not None else 0,
                state=channel.readyState,
                messagesSent=counters.messages_sent,
                bytesSent=counters.bytes_sent,
                messagesReceived=counters.messages_received,
                bytesReceived=counters.bytes_received,
            )
        session_id = f"{self.owner_id}_datasession"
        entries[session_id] = complex_value(
            "RTCPeerConnectionStats",
            id=session_id,
            type="session",
            timestampMillis=millis,
            dataChannelsOpened=self.opened,
            dataChannelsClosed=self.closed,
        )
        return entries
