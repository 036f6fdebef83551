"""Errors of the room media service, in the words the browser is shown (docs/protocol.md)."""

from __future__ import annotations

import logging

from django.utils.translation import gettext

from signaling.kurento import (
    IceError,
    InvalidParams,
    KurentoError,
    MediaServerUnavailable,
    SdpError,
)

logger = logging.getLogger(__name__)


class MediaError(Exception):
    """A media request that failed; `code` and `message` are for the browser."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def unavailable() -> MediaError:
    return MediaError(
        "media_unavailable",
        gettext("The media server cannot be reached right now. Please try again in a moment."),
    )


def media_error(error: KurentoError | MediaServerUnavailable) -> MediaError:
    """The browser's view of a media server failure."""
    if isinstance(error, MediaServerUnavailable):
        logger.warning("media server unavailable: %s", error)
        return unavailable()
    if isinstance(error, SdpError):
        return MediaError(
            "bad_sdp",
            gettext("The media server refused the session description: %(error)s")
            % {"error": error.message},
        )
    if isinstance(error, IceError | InvalidParams):
        return MediaError(
            "bad_candidate",
            gettext("The media server refused that: %(error)s") % {"error": error.message},
        )
    logger.error("media server error: %s", error)
    return MediaError(
        "media_error", gettext("The media server failed: %(error)s") % {"error": error.message}
    )
