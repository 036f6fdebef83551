"""The embedded media server: the Kurento Protocol's methods about media objects (create,
invoke, subscribe, release and the rest) on the object registry, over rpc.py's sockets and
sessions.

One `MediaServer` holds the object registry and the sessions; `python -m mediaserver --workers
N` runs N of them behind front.py's router.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, serve

from . import fanout, forwarding, ice, receive
from .config import Config
from .elements import MediaElement, MediaPipeline, PassThrough, ServerManager
from .errors import Code, KurentoError, marshall_error, too_many
from .filters import FILTER_FACTORIES
from .http_post import HttpPostEndpoint, HttpPostServer
from .hubs import HUB_FACTORIES, Composite, Hub, HubPort
from .kmd import enum_values
from .limits import MAX_ELEMENTS_PER_PIPELINE, MAX_OBJECTS_PER_SESSION
from .objects import MediaObject, Registry
from .player import PlayerEndpoint
from .recorder import RecorderEndpoint
from .rpc import (
    MAX_FRAME_BYTES,
    ClientConnection,
    RpcServer,
    _object_param,
)
from .rtp_endpoint import RtpEndpoint
from .rtp_sdp import sdes_param
from .sessions import Session, Sessions
from .webrtc import IceDefaults, WebRtcEndpoint

logger = logging.getLogger(__name__)

FLOW_CHECK_INTERVAL = 0.5


_send_path_logged = False


def _log_send_path() -> None:
    """Say once per process which fan-out send path is in use (fanout.py)."""
    global _send_path_logged
    if not _send_path_logged:
        _send_path_logged = True
        logger.info("RTP send path: %s", fanout.describe())
        logger.info("RTP receive path: %s", receive.describe())


class MediaServer(RpcServer):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.server_id = str(uuid.uuid4())
        self.sessions = Sessions()
        self.registry = Registry(self._deliver_event)
        for cls in (
            MediaPipeline,
            PassThrough,
            WebRtcEndpoint,
            RecorderEndpoint,
            PlayerEndpoint,
            *HUB_FACTORIES,
            RtpEndpoint,
            HttpPostEndpoint,
            *FILTER_FACTORIES,
        ):
            self.registry.register_factory(cls)
        self.http_post = HttpPostServer(config.host)
        self.manager = ServerManager(self.registry, self.sessions)
        self.ice_defaults = IceDefaults(config.stun_address, config.stun_port, config.turn_url)
        self.connections: set[ClientConnection] = set()
        self._ws_server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers = self._method_handlers()

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        forwarding.install()
        _log_send_path()
        ice.configure(
            ice.IcePolicy(
                addresses=self.config.ice_addresses,
                announced_address=self.config.announced_address,
                port_min=self.config.port_min,
                port_max=self.config.port_max,
            )
        )
        self._ws_server = await serve(
            self._serve_socket,
            self.config.host,
            self.config.port,
            max_size=MAX_FRAME_BYTES,
            compression=None,
            process_request=self._check_path,
            ping_interval=20,
            ping_timeout=20,
        )
        self._tasks = [
            asyncio.create_task(self._collect_sessions()),
            asyncio.create_task(self._watch_media_flow()),
        ]
        logger.info(
            "media server %s listening on %s (ICE on %s%s)",
            self.server_id,
            self.url,
            ",".join(self.config.ice_addresses),
            f", announced as {self.config.announced_address}"
            if self.config.announced_address
            else "",
        )

    @property
    def port(self) -> int:
        assert self._ws_server is not None
        return next(iter(self._ws_server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        """Close every socket, release every pipeline, stop background tasks."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        for pipeline in self.registry.pipelines():
            await pipeline.release()
        await self.http_post.close()
        logger.info("media server stopped")

    # -- sockets ------------------------------------------------------------------------------

    # -- methods ------------------------------------------------------------------------------

    async def _create(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        cls = self.registry.factory(params.get("type"))
        ctor = params.get("constructorParams") or {}
        if not isinstance(ctor, dict):
            raise marshall_error("'constructorParams' should be an object")
        if len(session.objects) >= MAX_OBJECTS_PER_SESSION:
            raise too_many(f"Too many objects in this session (limit {MAX_OBJECTS_PER_SESSION})")
        obj = self._construct(cls, ctor)
        # As in KMS: whoever holds the pipeline holds what is made in it, and the creator holds
        # the new object with its pipeline. So a pipeline several sessions build in (one per web
        # worker) stays while any of them lives, not only while the one that made it does.
        if obj.parent is not None:
            for holder in self.sessions.holders(obj.parent.id):
                holder.objects.add(obj.id)
        _hold(session, obj)
        logger.info("session %s created %s", session.id, obj.id)
        self.manager.emit("ObjectCreated", object=obj.id)
        return {"value": obj.id, "sessionId": session.id}

    def _construct(self, cls: type[MediaObject], ctor: dict[str, Any]) -> MediaObject:
        if cls is MediaPipeline:
            return MediaPipeline(self.registry)
        if cls is HubPort:
            return self._construct_hub_port(ctor)
        pipeline_id = ctor.get("mediaPipeline")
        if pipeline_id is None:
            raise marshall_error(f"{cls.TYPE} needs the constructor parameter 'mediaPipeline'")
        pipeline = self.registry.get(pipeline_id)
        if not isinstance(pipeline, MediaPipeline):
            raise KurentoError(
                Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR, f"'{pipeline_id}' is not a MediaPipeline"
            )
        if len(pipeline.children) >= MAX_ELEMENTS_PER_PIPELINE:
            raise too_many(
                f"Too many elements in this pipeline (limit {MAX_ELEMENTS_PER_PIPELINE})"
            )
        if cls is WebRtcEndpoint:
            flags = {name: ctor.get(name, False) for name in ("recvonly", "sendonly")}
            if not all(isinstance(v, bool) for v in flags.values()):
                raise marshall_error("'recvonly' and 'sendonly' parameters should be booleans")
            if flags["recvonly"] and flags["sendonly"]:
                raise KurentoError(
                    Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR,
                    "A WebRtcEndpoint cannot be both recvonly and sendonly",
                )
            return WebRtcEndpoint(
                self.registry,
                pipeline,
                ice=self.ice_defaults,
                **flags,
                use_data_channels=_constructor_param(ctor, "useDataChannels", bool, False),
                qos_dscp=_enum_param(ctor, "qosDscp", "DSCPValue", "NO_VALUE"),
                # Checked, then served with aiortc's ECDSA certificate either way (webrtc.py).
                certificate_key_type=_enum_param(
                    ctor, "certificateKeyType", "CertificateKeyType", "RSA"
                ),
            )
        if cls is RecorderEndpoint:
            return RecorderEndpoint(
                self.registry,
                pipeline,
                uri=_constructor_param(ctor, "uri", str),
                directory=Path(self.config.recordings_dir).resolve(),
                media_profile=_constructor_param(ctor, "mediaProfile", str, "WEBM"),
                stop_on_end_of_stream=_constructor_param(ctor, "stopOnEndOfStream", bool, False),
            )
        if cls is PlayerEndpoint:
            return PlayerEndpoint(
                self.registry,
                pipeline,
                uri=_constructor_param(ctor, "uri", str),
                directory=Path(self.config.recordings_dir).resolve(),
                use_encoded_media=_constructor_param(ctor, "useEncodedMedia", bool, False),
                network_cache=_constructor_param(ctor, "networkCache", int, 2000),
            )
        if cls is Composite:
            return Composite(
                self.registry,
                pipeline,
                width=_constructor_param(ctor, "width", int, 800),
                height=_constructor_param(ctor, "height", int, 600),
                framerate=_constructor_param(ctor, "framerate", int, 15),
            )
        if cls is RtpEndpoint:
            return self._rtp_endpoint(pipeline, ctor)
        if cls is HttpPostEndpoint:
            return HttpPostEndpoint(
                self.registry,
                pipeline,
                server=self.http_post,
                disconnection_timeout=_constructor_param(ctor, "disconnectionTimeout", int, 2),
                use_encoded_media=_constructor_param(ctor, "useEncodedMedia", bool, False),
            )
        assert issubclass(cls, MediaElement | Hub)
        return cls(self.registry, pipeline)  # type: ignore[call-arg]

    def _construct_hub_port(self, ctor: dict[str, Any]) -> HubPort:
        """A HubPort is made in a hub (its parent), not in a pipeline."""
        hub_id = _constructor_param(ctor, "hub", str)
        hub = self.registry.get(hub_id)
        if not isinstance(hub, Hub):
            raise KurentoError(Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR, f"'{hub_id}' is not a Hub")
        if len(hub.children) >= MAX_ELEMENTS_PER_PIPELINE:
            raise too_many(f"Too many ports in this hub (limit {MAX_ELEMENTS_PER_PIPELINE})")
        return HubPort(self.registry, hub)

    def _rtp_endpoint(self, pipeline: MediaPipeline, ctor: dict[str, Any]) -> RtpEndpoint:
        """An RtpEndpoint on the first configured media address of the family it asks for
        (`useIpv6`); with none of that family it is made, and its negotiation is refused."""
        sdes = sdes_param(ctor.get("crypto"))
        ipv6 = _constructor_param(ctor, "useIpv6", bool, False)
        address = next(
            (a for a in self.config.ice_addresses if (":" in a) == ipv6),
            None,
        )
        announced = self.config.announced_address if address is not None else None
        return RtpEndpoint(
            self.registry,
            pipeline,
            address=address,
            announced=announced,
            port_range=(self.config.port_min, self.config.port_max),
            sdes=sdes,
        )

    async def _invoke(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        obj = self.registry.get(_object_param(params))
        operation_params = params.get("operationParams") or {}
        if not isinstance(operation_params, dict):
            raise marshall_error("'operationParams' should be an object")
        logger.debug("session %s: %s.%s", session.id, obj.id, params.get("operation"))
        value = await obj.invoke(params.get("operation"), operation_params)
        return {"value": value, "sessionId": session.id}

    async def _subscribe(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        assert session is not None
        obj = self.registry.get(_object_param(params))
        return self._subscribe_session(session, obj.id, obj.supported_events(), params)

    async def _unsubscribe(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        assert session is not None
        subscription = params.get("subscription")
        if not isinstance(subscription, str):
            raise KurentoError(Code.INVALID_PARAMS, "'subscription' must be a string")
        self.sessions.unsubscribe(session, subscription)
        return {"sessionId": session.id}

    async def _release(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        object_id = _object_param(params)
        obj = self.registry.objects.get(object_id)
        if obj is not None:
            logger.info("session %s releases %s", session.id, object_id)
            await self._release_object(obj)
        return {"sessionId": session.id}

    async def _release_object(self, obj: MediaObject) -> None:
        doomed = [obj.id] + [o for o in self.registry.objects if o.startswith(obj.id + "/")]
        await obj.release()
        for object_id in doomed:
            if object_id not in self.registry.objects:
                self.sessions.forget_object(object_id)
                self.manager.emit("ObjectDestroyed", objectId=object_id)

    async def _describe(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        obj = self.registry.get(_object_param(params))
        return {**obj.describe(), "sessionId": session.id}

    async def _ref(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        assert session is not None
        _hold(session, self.registry.get(_object_param(params)))
        return {"sessionId": session.id}

    async def _unref(self, conn: ClientConnection, session: Session | None, params: dict) -> Any:
        """As KMS: letting go of an object the session does not hold (or nobody knows) is no
        error."""
        assert session is not None
        object_id = _object_param(params)
        if object_id in session.objects:
            session.objects.discard(object_id)
            await self._release_unheld([object_id])
        return {"sessionId": session.id}

    async def _close_session(
        self, conn: ClientConnection, session: Session | None, params: dict
    ) -> Any:
        assert session is not None
        held = self.sessions.end(session)
        if params.get("release") is True:
            for object_id in held:
                if (obj := self.registry.objects.get(object_id)) is not None:
                    await self._release_object(obj)
        else:
            await self._release_unheld(held)
        return None

    # -- events and housekeeping ----------------------------------------------------------------

    def _deliver_event(self, obj: MediaObject, event: str, data: dict[str, Any]) -> None:
        """Send the event to each session subscribed to it, once per session and name it was
        subscribed with, however many subscriptions it holds. `data.type` is the event's name,
        in the spelling subscribed with, except for Error, whose `type` field is the error's
        own type (KMS's Error event has no other)."""
        listeners = self.sessions.listeners.get(obj.id, {}).get(event)
        if not listeners:
            return
        sent: set[tuple[str, str]] = set()
        for subscription in tuple(listeners.values()):
            session = self.sessions.get(subscription.session_id)
            if session is None or session.connection is None:
                continue  # events for a detached session are dropped, as in KMS
            if (session.id, subscription.event) in sent:
                continue
            sent.add((session.id, subscription.event))
            data_type = data["type"] if event == "Error" else subscription.event
            session.connection.send(
                {
                    "jsonrpc": "2.0",
                    "method": "onEvent",
                    "params": {
                        "value": {
                            "object": obj.id,
                            "type": subscription.event,
                            "data": {**data, "type": data_type},
                        }
                    },
                }
            )

    async def _release_unheld(self, object_ids: set[str] | list[str]) -> None:
        for object_id in object_ids:
            obj = self.registry.objects.get(object_id)
            if obj is not None and obj is not self.manager and not self.sessions.holders(object_id):
                logger.info("releasing %s: no session holds it any more", object_id)
                await self._release_object(obj)

    async def collect(self) -> None:
        """End sessions detached longer than the grace period, releasing what only they held."""
        for session in self.sessions.expired(self.config.session_grace):
            logger.info("session %s expired after %.0f s", session.id, self.config.session_grace)
            await self._release_unheld(self.sessions.end(session))

    async def _watch_media_flow(self) -> None:
        while True:
            await asyncio.sleep(FLOW_CHECK_INTERVAL)
            now = time.monotonic()
            for obj in tuple(self.registry.objects.values()):
                if isinstance(obj, MediaElement) and not obj.released:
                    obj.check_flow(now)


def _hold(session: Session, obj: MediaObject) -> None:
    """The session holds the object and, as in KMS, its parents (an element's pipeline)."""
    node: MediaObject | None = obj
    while node is not None:
        session.objects.add(node.id)
        node = node.parent


_MISSING = object()


def _constructor_param(ctor: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """A constructor parameter of the JSON type `kind`; a missing or mistyped one is refused
    with 40001 (MARSHALL_ERROR), as KMS's generated factories refuse it."""
    value = ctor.get(name, default)
    if value is _MISSING:
        raise KurentoError(Code.MARSHALL_ERROR, f"'{name}' parameter is required")
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise KurentoError(Code.MARSHALL_ERROR, f"'{name}' parameter should be a {kind.__name__}")
    return value


def _enum_param(ctor: dict[str, Any], name: str, enum: str, default: str) -> str:
    """A constructor parameter of a Kurento enum type: a value not of the enum is refused with
    40001, as KMS's generated code refuses it while unmarshalling."""
    value = _constructor_param(ctor, name, str, default)
    if value not in enum_values(enum):
        raise KurentoError(Code.MARSHALL_ERROR, f"Invalid value for '{enum}': '{value[:64]}'")
    return value
