"""Type checks of message fields against their annotations, for both directions."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any


@functools.cache
def declared(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """A message class's field annotations (resolved once, not per message) and fields."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return any(
            value == option and type(value) is type(option)
            for option in typing.get_args(annotation)
        )
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, annotation)
