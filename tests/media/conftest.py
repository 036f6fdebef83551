"""Fixtures for the Kurento client and the room media service: the embedded media server in
this process (tests/mediaserver's fixture), with the product's settings pointed at it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mediaserver.server import MediaServer
from signaling import media
from tests.mediaserver.conftest import media_server  # noqa: F401  (a fixture)


def media_objects(server: MediaServer) -> list[str]:
    """What the media server holds besides its server manager."""
    return sorted(o for o in server.registry.objects if o != "manager_ServerManager")


def pipelines(server: MediaServer) -> list[str]:
    return [o for o in media_objects(server) if "/" not in o]


@pytest.fixture
async def kms(media_server: MediaServer, settings) -> AsyncIterator[MediaServer]:  # noqa: F811
    """The media server the product uses in this test. After the test, the product must have
    released everything it made there (checked before its sessions are closed and collected)."""
    settings.KMS_URL = media_server.url
    settings.KMS_CONNECT_TIMEOUT = 2.0
    settings.KMS_REQUEST_TIMEOUT = 5.0
    yield media_server
    await media.close_clients()
    assert media_objects(media_server) == [], "the room media service left media objects behind"
