"""Hubs: elements that take media from many HubPorts and give each port an output of their own.

A `HubPort` is a MediaElement whose parent is its hub (as in KMS, so releasing the hub releases
its ports). What is connected INTO a port goes to the hub; what the hub makes for the port comes
OUT of it, to whatever the port is connected to. Keyframe requests from a port's sinks go to the
hub, which passes them on to where the port's output comes from.

- `Composite` (an MCU) and `AlphaBlending` decode every port's media and mix it (mixing.py): one
  picture for all (a grid; pictures laid over a master picture), and for each port the audio of
  the others.
- `Dispatcher` routes one port's media to another port; `DispatcherOneToMany` routes one source
  port's media to every port. Both forward encoded frames as they are, never decoding.
- `Mixer` routes video as the dispatchers do, and mixes for each port the audio of the ports
  connected to it.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import Any

from .elements import MediaElement, MediaPipeline
from .errors import Code, KurentoError
from .frames import EncodedFrame
from .mixing import BlendLayout, CompositeMixer, GridLayout, Layout, PortGeometry
from .objects import MediaObject, Param, Registry

logger = logging.getLogger(__name__)

# Bounds of Composite's constructor parameters: a client cannot make it allocate huge pictures
# or spin its thread.
COMPOSITE_MAX_SIZE = 3840
COMPOSITE_MAX_FRAMERATE = 60


class Hub(MediaObject):
    """What every hub shares: its ports, numbered in creation order, and the hooks a kind of hub
    fills in to move their media."""

    TYPE = "Hub"
    CONSTRUCTOR = (Param("mediaPipeline", "MediaPipeline"),)

    def __init__(self, registry: Registry, pipeline: MediaPipeline) -> None:
        super().__init__(registry, parent=pipeline)
        self.ports: dict[int, HubPort] = {}
        self._numbers = itertools.count()

    def attach(self, port: HubPort) -> int:
        number = next(self._numbers)
        self.ports[number] = port
        self.port_added(number, port)
        return number

    def detach(self, port: HubPort) -> None:
        if self.ports.pop(port.number, None) is not None:
            self.port_removed(port)

    def owned_port(self, port: HubPort, name: str) -> HubPort:
        """The port, if it is one of this hub's; a port of another hub is an illegal parameter."""
        if port.hub is not self:
            raise KurentoError(
                Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR, f"'{name}' is not a port of this hub"
            )
        return port

    # -- what kinds of hub provide -------------------------------------------------------------

    def port_added(self, number: int, port: HubPort) -> None:
        """A port was created."""

    def port_removed(self, port: HubPort) -> None:
        """A port was released."""

    def port_frame(self, port: HubPort, kind: str, frame: EncodedFrame) -> None:
        """A frame came into a port from the element connected to it."""

    def port_keyframe_wanted(self, port: HubPort, kind: str) -> None:
        """A sink of the port's output wants a keyframe."""

    def dot_edges(self) -> list[str]:
        """The hub's routes for getGstreamerDot, as DOT edges."""
        return []

    # -- operations ----------------------------------------------------------------------------

    async def op_getGstreamerDot(self, details: str | None = None) -> str:
        lines = [f'digraph "{self.id}" {{']
        lines.extend(f'  "{port.id}";' for port in self.ports.values())
        lines.extend(f"  {edge}" for edge in self.dot_edges())
        lines.append("}")
        return "\n".join(lines)

    async def op_dumpGstreamerDot(self, details: str | None = None) -> None:
        return None


class HubPort(MediaElement):
    """A hub's connection point: media connected into it goes to the hub, the hub's output for it
    comes out of it."""

    TYPE = "HubPort"
    ABSTRACT = False
    CONSTRUCTOR = (Param("hub", "Hub"),)

    def __init__(self, registry: Registry, hub: Hub) -> None:
        super().__init__(registry, hub)
        self.hub = hub
        self.number = hub.attach(self)

    def on_sink_frame(self, kind: str, frame: EncodedFrame) -> None:
        self.hub.port_frame(self, kind, frame)

    def request_keyframe(self, kind: str) -> None:
        self.hub.port_keyframe_wanted(self, kind)

    async def on_release(self) -> None:
        await super().on_release()
        self.hub.detach(self)


class _MixingHub(Hub):
    """A hub that decodes and mixes its ports' media (mixing.py): one picture for every port,
    and for each port the audio of the others."""

    def __init__(
        self, registry: Registry, pipeline: MediaPipeline, layout: Layout | None, framerate: int
    ) -> None:
        super().__init__(registry, pipeline)
        self.mixer = CompositeMixer(
            layout=layout,
            framerate=framerate,
            on_video=self._deliver_video,
            on_audio=self._deliver_audio,
            on_broken_input=self._input_broken,
            listening=self._listening,
        )

    def port_added(self, number: int, port: HubPort) -> None:
        self.mixer.add_port(number)

    def port_removed(self, port: HubPort) -> None:
        self.mixer.remove_port(port.number)

    def port_frame(self, port: HubPort, kind: str, frame: EncodedFrame) -> None:
        self.mixer.push(port.number, kind, frame)

    def port_keyframe_wanted(self, port: HubPort, kind: str) -> None:
        if kind == "video":
            self.mixer.force_keyframe()

    def dot_edges(self) -> list[str]:
        return [f'"{port.id}" -> "{self.id}" [label="mixed"];' for port in self.ports.values()]

    def _deliver_video(self, frame: EncodedFrame) -> None:
        if not self.released:
            for port in tuple(self.ports.values()):
                port.hubs["video"].push(frame)

    def _deliver_audio(self, number: int, frame: EncodedFrame) -> None:
        port = self.ports.get(number)
        if port is not None and not self.released:
            port.hubs["audio"].push(frame)

    def _listening(self, number: int) -> bool:
        """Whether anything takes the port's audio (asked from the mixing thread: reading the
        list of sinks is safe there, and a stale answer costs only one 20 ms frame)."""
        port = self.ports.get(number)
        return port is not None and bool(port.hubs["audio"].sinks)

    def _input_broken(self, number: int) -> None:
        port = self.ports.get(number)
        if port is not None:
            port.pads["video"].request_keyframe()

    async def on_release(self) -> None:
        self.mixer.close()


class Composite(_MixingHub):
    """An MCU: every port's picture in a grid of `width` x `height` at `framerate` (KMS's
    defaults: 800x600 at 15 fps)."""

    TYPE = "Composite"
    ABSTRACT = False
    MODULE_NAME = "elements"
    CONSTRUCTOR = (
        Param("mediaPipeline", "MediaPipeline"),
        Param("width", "int", optional=True),
        Param("height", "int", optional=True),
        Param("framerate", "int", optional=True),
    )

    def __init__(
        self,
        registry: Registry,
        pipeline: MediaPipeline,
        *,
        width: int = 800,
        height: int = 600,
        framerate: int = 15,
    ) -> None:
        _check_range("width", width, 16, COMPOSITE_MAX_SIZE)
        _check_range("height", height, 16, COMPOSITE_MAX_SIZE)
        _check_range("framerate", framerate, 1, COMPOSITE_MAX_FRAMERATE)
        super().__init__(registry, pipeline, GridLayout(width & ~1, height & ~1), framerate)


class AlphaBlending(_MixingHub):
    """Pictures laid over the master port's (KMS's alphablending, at 15 fps): `setMaster`
    chooses the port whose picture is the background and sets the output size (the first port
    until then), `setPortProperties` puts a port's picture into a rectangle relative to it."""

    TYPE = "AlphaBlending"
    ABSTRACT = False
    MODULE_NAME = "elements"

    def __init__(self, registry: Registry, pipeline: MediaPipeline) -> None:
        layout = BlendLayout()
        super().__init__(registry, pipeline, layout, framerate=15)
        self.layout = layout

    async def op_setMaster(self, source: HubPort, zOrder: int) -> None:
        port = self.owned_port(source, "source")
        self._relayout(replace(self.layout, master=port.number, master_z=zOrder))

    async def op_setPortProperties(
        self,
        relativeX: float,
        relativeY: float,
        zOrder: int,
        relativeWidth: float,
        relativeHeight: float,
        port: HubPort,
    ) -> None:
        number = self.owned_port(port, "port").number
        # Bounded so that a port's picture cannot be scaled to a huge size.
        for name, value, low in (
            ("relativeX", relativeX, -1.0),
            ("relativeY", relativeY, -1.0),
            ("relativeWidth", relativeWidth, 0.0),
            ("relativeHeight", relativeHeight, 0.0),
        ):
            _check_range(name, value, low, 1.0)
        shape = PortGeometry(relativeX, relativeY, relativeWidth, relativeHeight, zOrder)
        self._relayout(replace(self.layout, geometry={**self.layout.geometry, number: shape}))

    def port_removed(self, port: HubPort) -> None:
        geometry = {k: v for k, v in self.layout.geometry.items() if k != port.number}
        self._relayout(replace(self.layout, geometry=geometry))
        super().port_removed(port)

    def _relayout(self, layout: BlendLayout) -> None:
        self.layout = self.mixer.layout = layout


class Routes:
    """Which port's input each port gives out, for some media kinds: frames forwarded as they
    are, keyframe requests passed to the source."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = kinds
        self.sources: dict[HubPort, HubPort] = {}  # a port -> the port its output comes from

    def route(self, sink: HubPort, source: HubPort | None) -> None:
        """Make `sink` give out what comes into `source` (nothing for None). Its viewers start
        again at a keyframe of the new source, asked for at once."""
        if self.sources.get(sink) is source:
            return
        if source is None:
            del self.sources[sink]
        else:
            self.sources[sink] = source
        if "video" in self.kinds:
            for pad in tuple(sink.hubs["video"].sinks):
                pad.resync()

    def forget(self, port: HubPort) -> None:
        """A released port: it gives out nothing, and what it fed gets nothing."""
        self.sources.pop(port, None)
        for sink, source in tuple(self.sources.items()):
            if source is port:
                self.route(sink, None)

    def forward(self, port: HubPort, kind: str, frame: EncodedFrame) -> None:
        if kind in self.kinds:
            for sink, source in tuple(self.sources.items()):
                if source is port:
                    sink.hubs[kind].push(frame)

    def keyframe_wanted(self, port: HubPort, kind: str) -> None:
        source = self.sources.get(port)
        if source is not None and kind in self.kinds:
            source.pads[kind].request_keyframe()

    def dot_edges(self) -> list[str]:
        label = "+".join(self.kinds)
        return [
            f'"{source.id}" -> "{sink.id}" [label="{label}"];'
            for sink, source in self.sources.items()
        ]


class _Router(Hub):
    """A hub that forwards: each port's output is some port's input, frames as they are."""

    def __init__(self, registry: Registry, pipeline: MediaPipeline) -> None:
        super().__init__(registry, pipeline)
        self.routes = Routes(("audio", "video"))

    def port_removed(self, port: HubPort) -> None:
        self.routes.forget(port)

    def port_frame(self, port: HubPort, kind: str, frame: EncodedFrame) -> None:
        self.routes.forward(port, kind, frame)

    def port_keyframe_wanted(self, port: HubPort, kind: str) -> None:
        self.routes.keyframe_wanted(port, kind)

    def dot_edges(self) -> list[str]:
        return self.routes.dot_edges()


class Dispatcher(_Router):
    """Routes a source port's media to a sink port (`connect`); a port gives out what the last
    connect routed to it."""

    TYPE = "Dispatcher"
    ABSTRACT = False
    MODULE_NAME = "elements"

    async def op_connect(self, source: HubPort, sink: HubPort) -> None:
        self.routes.route(self.owned_port(sink, "sink"), self.owned_port(source, "source"))


class DispatcherOneToMany(_Router):
    """Routes one port's media to every port (the source port included, as KMS does)."""

    TYPE = "DispatcherOneToMany"
    ABSTRACT = False
    MODULE_NAME = "elements"

    def __init__(self, registry: Registry, pipeline: MediaPipeline) -> None:
        super().__init__(registry, pipeline)
        self.source: HubPort | None = None

    async def op_setSource(self, source: HubPort) -> None:
        self._set_source(self.owned_port(source, "source"))

    async def op_removeSource(self) -> None:
        self._set_source(None)

    def _set_source(self, source: HubPort | None) -> None:
        self.source = source
        for port in tuple(self.ports.values()):
            self.routes.route(port, source)

    def port_added(self, number: int, port: HubPort) -> None:
        if self.source is not None:
            self.routes.route(port, self.source)

    def port_removed(self, port: HubPort) -> None:
        if port is self.source:
            self.source = None
        super().port_removed(port)


class Mixer(_MixingHub):
    """Media chosen per port (KMS's selectablemixer): `connect(VIDEO, source, sink)` makes the
    sink port give out the source port's video, as it is; `connect(AUDIO, source, sink)` adds
    the source's audio to what the sink port hears, a mix decoded and encoded for that port."""

    TYPE = "Mixer"
    ABSTRACT = False
    MODULE_NAME = "elements"

    def __init__(self, registry: Registry, pipeline: MediaPipeline) -> None:
        super().__init__(registry, pipeline, None, framerate=15)
        self.video = Routes(("video",))
        self.hearing: dict[int, frozenset[int]] = {}
        self.mixer.hearing = self.hearing

    async def op_connect(self, media: str, source: HubPort, sink: HubPort) -> None:
        source, sink = self.owned_port(source, "source"), self.owned_port(sink, "sink")
        if _mixer_media(media) == "VIDEO":
            self.video.route(sink, source)
        else:
            self._hear(sink.number, self.hearing.get(sink.number, frozenset()) | {source.number})

    async def op_disconnect(self, media: str, source: HubPort, sink: HubPort) -> None:
        source, sink = self.owned_port(source, "source"), self.owned_port(sink, "sink")
        if _mixer_media(media) == "VIDEO":
            raise KurentoError(
                Code.UNSUPPORTED_MEDIA_TYPE, "Video disconnection is not implemented yet"
            )
        self._hear(sink.number, self.hearing.get(sink.number, frozenset()) - {source.number})

    def _hear(self, number: int, sources: frozenset[int]) -> None:
        self.hearing = {**self.hearing, number: sources}
        self.mixer.hearing = self.hearing

    def port_removed(self, port: HubPort) -> None:
        self.video.forget(port)
        self.hearing = {
            number: sources - {port.number}
            for number, sources in self.hearing.items()
            if number != port.number
        }
        self.mixer.hearing = self.hearing
        super().port_removed(port)

    def port_frame(self, port: HubPort, kind: str, frame: EncodedFrame) -> None:
        if kind == "video":
            self.video.forward(port, kind, frame)
        else:
            super().port_frame(port, kind, frame)

    def port_keyframe_wanted(self, port: HubPort, kind: str) -> None:
        self.video.keyframe_wanted(port, kind)

    def dot_edges(self) -> list[str]:
        ports = {port.number: port for port in self.ports.values()}
        return self.video.dot_edges() + [
            f'"{ports[source].id}" -> "{ports[number].id}" [label="audio"];'
            for number, sources in self.hearing.items()
            for source in sources
            if source in ports and number in ports
        ]


def _mixer_media(media: str) -> str:
    """AUDIO or VIDEO; DATA is refused with 40005 as KMS does, anything else with 40001."""
    if media not in ("AUDIO", "VIDEO", "DATA"):
        raise KurentoError(Code.MARSHALL_ERROR, f"Invalid value for 'MediaType': '{media}'")
    if media == "DATA":
        raise KurentoError(Code.UNSUPPORTED_MEDIA_TYPE, "Invalid media type")
    return media


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if not low <= value <= high:
        raise KurentoError(
            Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR,
            f"'{name}' must be between {low} and {high}, not {value}",
        )


# The hub classes a client can create.
HUB_FACTORIES: tuple[type[MediaObject], ...] = (
    HubPort,
    Composite,
    AlphaBlending,
    Dispatcher,
    DispatcherOneToMany,
    Mixer,
)
