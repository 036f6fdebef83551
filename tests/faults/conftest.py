"""Fault injection against the product as operators run it: real processes (daphne, the
embedded media server), real Chromium callers, and faults caused for real (SIGKILL, SIGTERM,
dropped packets)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def product_factory(tmp_path) -> Iterator:
    from tests.live import ProductServer

    made: list[ProductServer] = []

    def make(extra_env: dict[str, str] | None = None, **kwargs) -> ProductServer:
        made.append(ProductServer(tmp_path, extra_env, **kwargs).start())
        return made[-1]

    yield make
    for server in made:
        server.stop()
