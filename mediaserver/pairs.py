"""aioice's nominated pairs (`Connection._nominated`, one per component), watched: both native
paths (the fan-out send path's writers, the receive path) use the pair's socket directly and
must stop when aioice nominates another pair or drops it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class WatchedPairs(dict):
    """aioice's nominated pairs by component (`Connection._nominated`), telling its watchers
    when a pair is nominated, replaced or dropped (aioice sets items and clears it)."""

    def __init__(self, pairs: dict[int, Any]) -> None:
        super().__init__(pairs)
        self.watchers: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for watcher in tuple(self.watchers):
            watcher()

    def __setitem__(self, key: int, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: int) -> None:
        super().__delitem__(key)
        self._changed()

    def pop(self, *args: Any) -> Any:
        value = super().pop(*args)
        self._changed()
        return value

    def clear(self) -> None:
        super().clear()
        self._changed()


def watched(connection: Any) -> WatchedPairs | None:
    """The connection's nominated pairs, watched from now on (None: something else holds them)."""
    pairs = connection._nominated
    if type(pairs) is dict:
        pairs = connection._nominated = WatchedPairs(pairs)
    return pairs if isinstance(pairs, WatchedPairs) else None
