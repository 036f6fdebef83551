"""Media objects and their registry: ids, types, operations, properties, events and release.

Operations are methods named `op_<operationName>`; their typed parameters are checked and converted
from the JSON `operationParams` (object references become objects). A property `x` answers `getX`
and, unless read-only, `setX {"x": value}`. Events go through `emit`, which builds the payload KMS
sends and hands it to the server's event sink.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
import types
import typing
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import (
    Code,
    KurentoError,
    factory_not_found,
    invalid_params,
    marshall_error,
    method_not_found,
    object_not_found,
    too_large,
    too_many,
)
from .limits import MAX_PROPERTY_BYTES, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS

logger = logging.getLogger(__name__)

MODULE = "kurento"

# The one ServerManager's id, as KMS names it, and its own events (elements.py makes it; the
# --workers front, which loads no media module, answers for it).
SERVER_MANAGER_ID = "manager_ServerManager"
SERVER_MANAGER_EVENTS = frozenset({"ObjectCreated", "ObjectDestroyed"})

# Event names of Kurento 6.x that clients still subscribe to, and what they mean in 7.x.
EVENT_ALIASES = {
    "OnIceCandidate": "IceCandidateFound",
    "OnIceGatheringDone": "IceGatheringDone",
    "OnIceComponentStateChanged": "IceComponentStateChanged",
    "IceComponentStateChange": "IceComponentStateChanged",
    "MediaFlowInStateChange": "MediaFlowInStateChanged",
    "MediaFlowOutStateChange": "MediaFlowOutStateChanged",
}


def complex_value(type_name: str, **fields: Any) -> dict[str, Any]:
    """A Kurento complex type as it travels in results and events."""
    return {"__module__": MODULE, "__type__": type_name, **fields}


def now_millis() -> str:
    return str(int(time.time() * 1000))


EventSink = Callable[["MediaObject", str, dict[str, Any]], None]


@dataclass(frozen=True)
class Property:
    name: str
    read_only: bool = False
    # Set once, by the constructor or the server (KMS's "final"): answered by getX, never setX.
    final: bool = False
    kind: type = str
    # The Kurento type, for the KMD (kmd.py), when `kind` does not say it: an enum, a complex
    # type, a list.
    type_name: str = ""


@dataclass(frozen=True)
class Param:
    """A constructor parameter as the KMD describes it."""

    name: str
    type_name: str
    optional: bool = False


class Registry:
    """Every live media object by id; the only place that creates and forgets them."""

    def __init__(self, event_sink: EventSink) -> None:
        self.objects: dict[str, MediaObject] = {}
        self.event_sink = event_sink
        self.factories: dict[str, type[MediaObject]] = {}

    def register_factory(self, cls: type[MediaObject]) -> None:
        self.factories[cls.TYPE] = cls

    def factory(self, type_name: object) -> type[MediaObject]:
        if not isinstance(type_name, str):
            raise KurentoError(Code.INVALID_PARAMS, "'type' must be a string")
        short = type_name.removeprefix(f"{MODULE}.")
        cls = self.factories.get(short)
        if cls is None or cls.ABSTRACT:
            raise factory_not_found(type_name)
        return cls

    def get(self, object_id: object) -> MediaObject:
        obj = self.objects.get(object_id) if isinstance(object_id, str) else None
        if obj is None:
            raise object_not_found(object_id)
        return obj

    def add(self, obj: MediaObject) -> None:
        self.objects[obj.id] = obj

    def forget(self, obj: MediaObject) -> None:
        self.objects.pop(obj.id, None)

    def pipelines(self) -> list[MediaObject]:
        return [o for o in self.objects.values() if o.TYPE == "MediaPipeline"]


class MediaObject:
    """Base of every Kurento object: identity, tags, properties, operations, events, release."""

    TYPE: ClassVar[str] = "MediaObject"
    ABSTRACT: ClassVar[bool] = True
    MODULE_NAME: ClassVar[str] = "core"  # the Kurento module (getInfo, getKmd) of the class
    CONSTRUCTOR: ClassVar[tuple[Param, ...]] = ()  # what `create` takes, for the KMD
    EVENTS: ClassVar[frozenset[str]] = frozenset({"Error"})
    PROPERTIES: ClassVar[tuple[Property, ...]] = (
        # Answered by the op_get* methods below; listed so the KMD shows them as properties.
        Property("mediaPipeline", final=True, type_name="MediaPipeline"),
        Property("parent", final=True, type_name="MediaObject"),
        Property("id", final=True),
        Property("children", read_only=True, type_name="MediaObject[]"),
        Property("name"),
        Property("sendTagsInEvents", kind=bool),
        Property("creationTime", final=True, kind=int),
    )

    def __init__(
        self,
        registry: Registry,
        *,
        parent: MediaObject | None = None,
        object_id: str | None = None,
    ) -> None:
        self.registry = registry
        self.parent = parent
        self.id = object_id or self._new_id(parent)
        self.children: list[MediaObject] = []
        self.released = False
        self.creation_time = int(time.time())
        self.tags: dict[str, str] = {}
        self.values: dict[str, Any] = {"name": self.id, "sendTagsInEvents": False}
        if parent is not None:
            parent.children.append(self)
        registry.add(self)

    def _new_id(self, parent: MediaObject | None) -> str:
        own = f"{uuid.uuid4()}_{MODULE}.{self.TYPE}"
        return f"{parent.id}/{own}" if parent is not None else own

    @classmethod
    def qualified_type(cls) -> str:
        return f"{MODULE}.{cls.TYPE}"

    @classmethod
    def is_kurento_class(cls) -> bool:
        """Whether the class is one of Kurento's (it names its own TYPE), not a helper base
        that shares its parent's."""
        return "TYPE" in cls.__dict__

    @classmethod
    def hierarchy(cls) -> list[str]:
        return [
            f"{MODULE}.{base.TYPE}"
            for base in cls.__mro__[1:]
            if issubclass(base, MediaObject) and base.is_kurento_class() and base.TYPE != cls.TYPE
        ]

    @classmethod
    def supported_events(cls) -> frozenset[str]:
        events: set[str] = set()
        for base in cls.__mro__:
            events |= set(getattr(base, "EVENTS", ()))
        return frozenset(events)

    @classmethod
    def properties(cls) -> dict[str, Property]:
        found: dict[str, Property] = {}
        for base in reversed(cls.__mro__):
            for prop in getattr(base, "PROPERTIES", ()):
                found[prop.name.lower()] = prop
        return found

    @property
    def pipeline(self) -> MediaObject | None:
        node: MediaObject | None = self
        while node is not None and node.TYPE != "MediaPipeline":
            node = node.parent
        return node

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "qualifiedType": self.qualified_type(),
            "hierarchy": self.hierarchy(),
        }

    # -- operations --------------------------------------------------------------------------

    async def invoke(self, operation: object, params: dict[str, Any]) -> Any:
        if not isinstance(operation, str) or not operation:
            raise KurentoError(Code.INVALID_PARAMS, "'operation' must be a non-empty string")
        method = getattr(self, f"op_{operation}", None)
        if method is not None:
            return await _call(self.registry, method, operation, params)
        prefix, prop_name = operation[:3], operation[3:]
        prop = self.properties().get(prop_name.lower()) if prefix in ("get", "set") else None
        if prop is None:
            raise method_not_found(operation, len(params))
        if prefix == "get":
            return self.get_property(prop.name)
        if prop.read_only or prop.final:
            raise method_not_found(operation, len(params))
        if prop.name not in params and len(params) != 1:
            raise marshall_error(f"Operation '{operation}' takes the parameter '{prop.name}'")
        value = params.get(prop.name, next(iter(params.values()), None))
        value = _convert(self.registry, value, prop.kind, prop.name)
        if len(json.dumps(value)) > MAX_PROPERTY_BYTES:
            raise too_large(f"Value of '{prop.name}' too large (limit {MAX_PROPERTY_BYTES} bytes)")
        self.set_property(prop.name, value)
        return None

    def get_property(self, name: str) -> Any:
        return self.values.get(name)

    def set_property(self, name: str, value: Any) -> None:
        self.values[name] = value

    async def op_getMediaPipeline(self) -> str | None:
        pipeline = self.pipeline
        return pipeline.id if pipeline is not None else None

    async def op_getParent(self) -> str | None:
        return self.parent.id if self.parent is not None else None

    async def op_getId(self) -> str:
        return self.id

    async def op_getChildren(self) -> list[str]:
        return [child.id for child in self.children]

    async def op_getChilds(self) -> list[str]:  # the 6.x spelling
        return await self.op_getChildren()

    async def op_getCreationTime(self) -> int:
        return self.creation_time

    async def op_addTag(self, key: str, value: str) -> None:
        if len(key) > MAX_TAG_KEY or len(value) > MAX_TAG_VALUE:
            raise too_large(
                f"Tag too large (key at most {MAX_TAG_KEY} characters, "
                f"value at most {MAX_TAG_VALUE})"
            )
        if key not in self.tags and len(self.tags) >= MAX_TAGS:
            raise too_many(f"Too many tags on this object (limit {MAX_TAGS})")
        self.tags[key] = value

    async def op_removeTag(self, key: str) -> None:
        self.tags.pop(key, None)

    async def op_getTag(self, key: str) -> str:
        if key not in self.tags:
            raise KurentoError(Code.MEDIA_OBJECT_TAG_KEY_NOT_FOUND, f"Tag key '{key}' not found")
        return self.tags[key]

    async def op_getTags(self) -> list[dict[str, Any]]:
        return [complex_value("Tag", key=k, value=v) for k, v in self.tags.items()]

    # -- events ------------------------------------------------------------------------------

    def emit(self, event_type: str, **payload: Any) -> None:
        tags = (
            [complex_value("Tag", key=k, value=v) for k, v in self.tags.items()]
            if self.values.get("sendTagsInEvents")
            else []
        )
        millis = now_millis()
        data = {
            "source": self.id,
            "tags": tags,
            "timestampMillis": millis,
            "timestamp": str(int(millis) // 1000),
            "type": event_type,
            **payload,
        }
        self.registry.event_sink(self, event_type, data)

    # -- release -----------------------------------------------------------------------------

    async def release(self) -> None:
        """Release the object and its children; releasing twice does nothing."""
        if self.released:
            return
        self.released = True
        for child in tuple(self.children):
            await child.release()
        try:
            await self.on_release()
        except Exception:
            logger.exception("releasing %s failed", self.id)
        if self.parent is not None and self in self.parent.children:
            self.parent.children.remove(self)
        self.registry.forget(self)
        logger.info("released %s", self.id)

    async def on_release(self) -> None:
        """Free what the object holds (sockets, tasks); subclasses extend it."""


async def _call(
    registry: Registry, method: Callable[..., Awaitable[Any]], operation: str, params: dict
) -> Any:
    kwargs: dict[str, Any] = {}
    for name, annotation, required in _parameters(method.__func__):  # type: ignore[attr-defined]
        if name in params and params[name] is not None:
            kwargs[name] = _convert(registry, params[name], annotation, name)
        elif required:
            raise marshall_error(f"Operation '{operation}' requires the parameter '{name}'")
    return await method(**kwargs)


@functools.cache
def _parameters(function: Callable[..., Any]) -> tuple[tuple[str, Any, bool], ...]:
    """An operation's parameters as (name, annotation, required), worked out once per method."""
    hints = typing.get_type_hints(function)
    return tuple(
        (name, hints.get(name, Any), parameter.default is inspect.Parameter.empty)
        for name, parameter in inspect.signature(function).parameters.items()
        if name != "self"
    )


def _convert(registry: Registry, value: Any, annotation: Any, name: str) -> Any:
    """Check a JSON value against a parameter's annotation; object ids become objects. A value
    of the wrong JSON type is a marshalling error (40001), as in KMS; an object of the wrong
    class is an illegal parameter (40107)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = options[0] if len(options) == 1 else Any
        origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if isinstance(annotation, type) and issubclass(annotation, MediaObject):
        if not isinstance(value, str):
            raise marshall_error(f"Parameter '{name}' must be an object id")
        obj = registry.get(value)
        if not isinstance(obj, annotation):
            raise invalid_params(f"Parameter '{name}' must be a {annotation.TYPE}")
        return obj
    expected = origin or annotation
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise marshall_error(f"Parameter '{name}' must be of type {_json_type(expected)}")
    return value


def _json_type(python_type: Any) -> str:
    return {str: "String", int: "int", float: "float", bool: "boolean", dict: "Object"}.get(
        python_type, "Array" if python_type is list else str(python_type)
    )
