"""Pipelines, the server manager, and media elements with their connections and media-flow state."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from .errors import Code, KurentoError, marshall_error
from .forwarding import MediaHub, SinkPad
from .frames import EncodedFrame
from .kmd import KMD_MODULES, module_descriptor
from .objects import (
    SERVER_MANAGER_EVENTS,
    SERVER_MANAGER_ID,
    MediaObject,
    Param,
    Property,
    Registry,
    complex_value,
)

SERVER_VERSION = "7.3.0"
MEDIA_KINDS = {"AUDIO": "audio", "VIDEO": "video"}
MEDIA_TYPES = ("AUDIO", "VIDEO", "DATA")
FLOW_TIMEOUT = 2.0  # seconds without media before a stream counts as NOT_FLOWING


class MediaPipeline(MediaObject):
    TYPE = "MediaPipeline"
    ABSTRACT = False
    CONSTRUCTOR = ()
    PROPERTIES = (Property("latencyStats", kind=bool),)

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        self.values["latencyStats"] = False

    async def op_getGstreamerDot(self, details: str | None = None) -> str:
        lines = [f'digraph "{self.id}" {{']
        for child in self.children:
            if isinstance(child, MediaElement):
                for sink, media_type in child.sink_links():
                    lines.append(f'  "{child.id}" -> "{sink.id}" [label="{media_type}"];')
        lines.append("}")
        return "\n".join(lines)

    async def op_dumpGstreamerDot(self, details: str | None = None) -> None:
        return None


class ServerManager(MediaObject):
    """The fixed object `manager_ServerManager`: what the server runs and how loaded it is."""

    TYPE = "ServerManager"
    EVENTS = SERVER_MANAGER_EVENTS
    PROPERTIES = (
        Property("info", read_only=True, type_name="ServerInfo"),
        Property("pipelines", read_only=True, type_name="MediaPipeline[]"),
        Property("sessions", read_only=True, type_name="String[]"),
        Property("metadata", read_only=True),
    )
    ID = SERVER_MANAGER_ID

    def __init__(self, registry: Registry, sessions: Any) -> None:
        super().__init__(registry, object_id=self.ID)
        self._sessions = sessions

    def get_property(self, name: str) -> Any:
        if name == "info":
            return self.info()
        if name == "pipelines":
            return [p.id for p in self.registry.pipelines()]
        if name == "sessions":
            return self._sessions.ids()
        if name == "metadata":
            return "{}"
        return super().get_property(name)

    def info(self) -> dict[str, Any]:
        modules = [
            (name, [f for f, cls in self.registry.factories.items() if name == cls.MODULE_NAME])
            for name in KMD_MODULES
        ]
        return complex_value(
            "ServerInfo",
            version=SERVER_VERSION,
            type="KMS",
            capabilities=["transactions"],
            modules=[
                complex_value(
                    "ModuleInfo",
                    name=name,
                    version=SERVER_VERSION,
                    generationTime="",
                    factories=factories,
                )
                for name, factories in modules
            ],
        )

    async def op_getKmd(self, moduleName: str) -> str:
        """The module's interface description, made from the classes this server has."""
        classes = {type(self), Filter, *self.registry.factories.values()}
        descriptor = module_descriptor(moduleName, SERVER_VERSION, classes)
        if descriptor is None:
            raise KurentoError(
                Code.SERVER_MANAGER_ERROR_KMD_NOT_FOUND, "Requested kmd module doesn't exist"
            )
        return json.dumps(descriptor, indent=2)

    async def op_getCpuCount(self) -> int:
        return len(os.sched_getaffinity(0))

    async def op_getUsedCpu(self, interval: int) -> float:
        """Percent of all CPUs this process used over the next `interval` ms (at most 10 s).
        The interval is required, as in KMS (its interface gives it no `optional`)."""
        wall_start, cpu_start = time.monotonic(), time.process_time()
        await asyncio.sleep(min(max(interval, 1), 10_000) / 1000)
        wall, cpu = time.monotonic() - wall_start, time.process_time() - cpu_start
        return round(100.0 * cpu / wall / len(os.sched_getaffinity(0)), 2)

    async def op_getUsedMemory(self) -> int:
        """Resident memory of this process in KiB, as KMS reports it."""
        try:
            statm = Path("/proc/self/statm").read_text()  # noqa: ASYNC240 (procfs, no disk)
            return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def release(self) -> None:
        return None  # the manager lives as long as the server


class MediaElement(MediaObject):
    """An element in a pipeline: it has an outgoing hub and an incoming pad per media kind, links to
    the elements it feeds, and tracks whether media flows in and out."""

    TYPE = "MediaElement"
    EVENTS = frozenset(
        {
            "ElementConnected",
            "ElementDisconnected",
            "MediaFlowOutStateChanged",
            "MediaFlowInStateChanged",
            "MediaTranscodingStateChanged",
        }
    )
    CONSTRUCTOR = (Param("mediaPipeline", "MediaPipeline"),)
    PROPERTIES = (
        Property("encoderBitrate", kind=int),
        Property("minEncoderBitrate", kind=int),
        Property("maxEncoderBitrate", kind=int),
    )

    def __init__(self, registry: Registry, pipeline: MediaObject) -> None:
        # The parent is the pipeline, or for a HubPort its hub (hubs.py).
        super().__init__(registry, parent=pipeline)
        self.values.update(encoderBitrate=300000, minEncoderBitrate=0, maxEncoderBitrate=0)
        self.hubs = {
            kind: MediaHub(kind, lambda k=kind: self.request_keyframe(k))
            for kind in MEDIA_KINDS.values()
        }
        for kind, hub in self.hubs.items():
            hub.on_transcoding = lambda codec, on, k=kind: self._transcoding(k, codec, on)
        self.pads = {
            kind: SinkPad(
                kind, lambda frame, k=kind: self.on_sink_frame(k, frame), self.accepts(kind)
            )
            for kind in MEDIA_KINDS.values()
        }
        # media type -> the element feeding this one, and -> the elements this one feeds
        self.sources: dict[str, MediaElement] = {}
        self.sinks: dict[str, list[MediaElement]] = {t: [] for t in MEDIA_TYPES}
        self.flowing_in = {kind: False for kind in MEDIA_KINDS.values()}
        self.flowing_out = {kind: False for kind in MEDIA_KINDS.values()}

    # -- what subclasses provide ---------------------------------------------------------------

    def accepts(self, kind: str) -> Any:
        """A callable answering which codecs the element can take in (empty: any)."""
        return lambda: ()

    def on_sink_frame(self, kind: str, frame: EncodedFrame) -> None:
        """A frame arrived from the connected source."""

    def request_keyframe(self, kind: str) -> None:
        """A sink wants a keyframe from this element's outgoing stream."""

    def on_sink_data(self, message: str | bytes) -> None:
        """A data message from the element connected to this one's DATA sink. Only a
        WebRtcEndpoint with data channels takes it; KMS's other elements, PassThrough among
        them (kmspassthrough.c links audio and video only), let it go nowhere."""

    def push_data(self, message: str | bytes) -> None:
        """A data message out of this element: to every element connected to its DATA output
        (KMS's data output is a tee)."""
        for sink in tuple(self.sinks["DATA"]):
            sink.on_sink_data(message)

    def flow_in_at(self, kind: str) -> float:
        """When media last reached the element's sink pad from the element connected to it:
        KMS's "flow in" (a probe on the element's sink pads)."""
        return self.pads[kind].last_frame_at

    def flow_out_at(self, kind: str) -> float:
        """When media last entered the element's outgoing hub: KMS's "flow out" (a probe on the
        sink pads of its output agnosticbin). It counts whether or not a sink is connected, so a
        WebRtcEndpoint receiving from its peer flows out on its own, as in KMS."""
        return self.hubs[kind].last_frame_at

    # -- connections ---------------------------------------------------------------------------

    def sink_links(self) -> list[tuple[MediaElement, str]]:
        return [(sink, t) for t, sinks in self.sinks.items() for sink in sinks]

    async def op_connect(
        self,
        sink: MediaElement,
        mediaType: str | None = None,
        sourceMediaDescription: str | None = None,
        sinkMediaDescription: str | None = None,
    ) -> None:
        for media_type in _media_types(mediaType):
            previous = sink.sources.get(media_type)
            if previous is self:
                continue
            if previous is not None:
                previous.unlink(sink, media_type)
            sink.sources[media_type] = self
            self.sinks[media_type].append(sink)
            kind = MEDIA_KINDS.get(media_type)
            if kind is not None:
                sink.pads[kind].connect(self.hubs[kind])
            self.emit("ElementConnected", **_connection_event(sink, media_type))

    async def op_disconnect(
        self,
        sink: MediaElement,
        mediaType: str | None = None,
        sourceMediaDescription: str | None = None,
        sinkMediaDescription: str | None = None,
    ) -> None:
        for media_type in _media_types(mediaType):
            if sink.sources.get(media_type) is self:
                self.unlink(sink, media_type)

    def unlink(self, sink: MediaElement, media_type: str) -> None:
        del sink.sources[media_type]
        self.sinks[media_type].remove(sink)
        kind = MEDIA_KINDS.get(media_type)
        if kind is not None:
            sink.pads[kind].disconnect()
        if not self.released:
            self.emit("ElementDisconnected", **_connection_event(sink, media_type))

    async def op_getSourceConnections(
        self, mediaType: str | None = None, description: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            _connection_data(source, self, t)
            for t, source in self.sources.items()
            if t in _media_types(mediaType)
        ]

    async def op_getSinkConnections(
        self, mediaType: str | None = None, description: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            _connection_data(self, sink, t)
            for sink, t in self.sink_links()
            if t in _media_types(mediaType)
        ]

    async def op_isMediaFlowingIn(
        self, mediaType: str, sinkMediaDescription: str | None = None
    ) -> bool:
        kind = MEDIA_KINDS.get(_media_types(mediaType)[0])
        return bool(kind) and self.flowing_in[kind]

    async def op_isMediaFlowingOut(
        self, mediaType: str, sourceMediaDescription: str | None = None
    ) -> bool:
        kind = MEDIA_KINDS.get(_media_types(mediaType)[0])
        return bool(kind) and self.flowing_out[kind]

    async def op_isMediaTranscoding(self, mediaType: str, binName: str | None = None) -> bool:
        kind = MEDIA_KINDS.get(_media_types(mediaType)[0])
        return bool(kind) and self.is_transcoding(kind)

    def is_transcoding(self, kind: str) -> bool:
        """Whether the element re-encodes media of this kind (its hub, for a sink that cannot
        take the codec; a player, a source it cannot forward as is)."""
        return bool(self.hubs[kind].transcoders)

    async def op_setAudioFormat(self, caps: dict) -> None:
        return None

    async def op_setVideoFormat(self, caps: dict) -> None:
        return None

    async def op_getGstreamerDot(self, details: str | None = None) -> str:
        return f'digraph "{self.id}" {{}}'

    async def op_dumpGstreamerDot(self, details: str | None = None) -> None:
        return None

    async def op_getStats(self, mediaType: str | None = None) -> dict[str, Any]:
        if mediaType is not None:
            _media_types(mediaType)  # an unknown type is refused
        return {self.id: self.element_stats(int(time.time() * 1000))}

    def element_stats(self, millis: int) -> dict[str, Any]:
        """The element's own entry in getStats, under its id as in KMS (no latency measured)."""
        return complex_value(
            "ElementStats", id=self.id, type="element", timestampMillis=millis, inputLatency=[]
        )

    # -- media flow ----------------------------------------------------------------------------

    def check_flow(self, now: float) -> None:
        """Emit MediaFlowIn/OutStateChanged when a stream starts or stops (called periodically)."""
        for kind in MEDIA_KINDS.values():
            for state, last, event in (
                (self.flowing_in, self.flow_in_at(kind), "MediaFlowInStateChanged"),
                (self.flowing_out, self.flow_out_at(kind), "MediaFlowOutStateChanged"),
            ):
                flowing = last > 0 and now - last < FLOW_TIMEOUT
                if flowing != state[kind]:
                    state[kind] = flowing
                    self.emit(
                        event,
                        state="FLOWING" if flowing else "NOT_FLOWING",
                        padName="default",
                        mediaType=kind.upper(),
                    )

    def _transcoding(self, kind: str, codec: str, on: bool) -> None:
        self.emit(
            "MediaTranscodingStateChanged",
            state="TRANSCODING" if on else "NOT_TRANSCODING",
            binName=f"{kind}-{codec}",
            mediaType=kind.upper(),
        )

    async def on_release(self) -> None:
        for media_type, source in tuple(self.sources.items()):
            source.unlink(self, media_type)
        for sink, media_type in self.sink_links():
            self.unlink(sink, media_type)
        for hub in self.hubs.values():
            hub.close()


class Endpoint(MediaElement):
    TYPE = "Endpoint"


class Filter(MediaElement):
    """The base of the filters module's classes (filters.py), listed in the core module's KMD
    as KMS lists it."""

    TYPE = "Filter"


class UriEndpoint(Endpoint):
    """An endpoint that writes or reads a URI (a recorder, a player). Its state is STOP, START or
    PAUSE, and each change is reported by UriEndpointStateChanged."""

    TYPE = "UriEndpoint"
    EVENTS = frozenset({"UriEndpointStateChanged"})
    PROPERTIES = (
        Property("uri", final=True),
        Property("state", read_only=True, type_name="UriEndpointState"),
    )

    def __init__(self, registry: Registry, pipeline: MediaPipeline, uri: str) -> None:
        super().__init__(registry, pipeline)
        self.uri = uri.replace("%2F", "/")  # as KMS does, and getUri answers it so
        self.state = "STOP"

    def get_property(self, name: str) -> Any:
        if name == "uri":
            return self.uri
        if name == "state":
            return self.state
        return super().get_property(name)

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.emit("UriEndpointStateChanged", state=state)

    async def op_pause(self) -> None:
        await self.pause_uri()

    async def op_stop(self) -> None:
        await self.stop_uri()

    async def pause_uri(self) -> None:
        """Pause writing or reading (subclasses)."""

    async def stop_uri(self) -> None:
        """Stop writing or reading (subclasses)."""


class ForwardsAsIs(MediaElement):
    """An element whose output is its input, frame for frame (not a Kurento class: PassThrough
    and the filters that only look at their media share it)."""

    def on_sink_frame(self, kind: str, frame: EncodedFrame) -> None:
        self.hubs[kind].push(frame)

    def request_keyframe(self, kind: str) -> None:
        self.pads[kind].request_keyframe()


class PassThrough(ForwardsAsIs):
    """Forwards what it receives to its sinks unchanged."""

    TYPE = "PassThrough"
    ABSTRACT = False


def _media_types(media_type: str | None) -> tuple[str, ...]:
    if media_type is None:
        return MEDIA_TYPES
    if media_type not in MEDIA_TYPES:
        raise marshall_error(f"Invalid value for 'MediaType': '{media_type}'")
    return (media_type,)


def _connection_data(source: MediaElement, sink: MediaElement, media_type: str) -> dict[str, Any]:
    return complex_value(
        "ElementConnectionData",
        source=source.id,
        sink=sink.id,
        type=media_type,
        sourceDescription="default",
        sinkDescription="default",
    )


def _connection_event(sink: MediaElement, media_type: str) -> dict[str, Any]:
    return {
        "sink": sink.id,
        "mediaType": media_type,
        "sourceMediaDescription": "default",
        "sinkMediaDescription": "default",
    }
