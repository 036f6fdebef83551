"""The pre-join connection test: Kurento's hello-world loopback as a product feature.

A test is a MediaPipeline of its own on a reachable media server, holding one WebRtcEndpoint
connected to itself, so that the browser's camera and microphone come straight back to it: the
page sees its picture return, the round-trip time, and whether a relay was needed. It belongs
to no room and no participant, and nothing of it is stored in the database: the socket that
started it (signaling.connection_test) holds the ids and releases the pipeline however the
test ends. Only Kurento Protocol calls the room media service already makes are used (create,
subscribe IceCandidateFound, connect, processOffer, gatherCandidates, addIceCandidate,
release), so it works on Kurento Media Server as on the embedded media server.

If the worker process dies mid-test, nothing here survives to release it: the media server's
own collector releases the objects of the dead connection's session (the Kurento Protocol's
session garbage collection), as for anything else that worker held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from signaling import turn
from signaling.kurento import (
    KurentoError,
    MediaPipeline,
    MediaServerUnavailable,
    ObjectNotFound,
    WebRtcEndpoint,
    create_pipeline,
)
from signaling.media import clients
from signaling.media.errors import MediaError, media_error

logger = logging.getLogger(__name__)

# A test the browser never stops is stopped by the server after this long (seconds). The page
# stops its own after 20 s; this bounds what a page that died or misbehaves can hold.
TIME_LIMIT_SECONDS = 60.0
# Tests one user may run at once in this process (each socket runs one at a time): a page runs
# one, so this only bounds what a user's many sockets could hold on the media server.
MAX_TESTS_PER_USER = 3

CandidateRelay = Callable[[dict[str, Any]], Awaitable[None]]

# user id -> the pipelines of that user's running tests, in this process.
_running: dict[int, set[str]] = {}


@dataclass(frozen=True)
class Loopback:
    """One running test: where it lives and whose it is."""

    user_id: int
    server_url: str
    pipeline_id: str
    endpoint_id: str

    def endpoint(self) -> WebRtcEndpoint:
        return WebRtcEndpoint(clients.media_client(self.server_url), self.endpoint_id)


def running_for(user_id: int) -> int:
    """How many tests the user runs in this process now."""
    return len(_running.get(user_id, ()))


def _candidate_relay(relay: CandidateRelay) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """The IceCandidateFound callback: the candidate as the browser takes it."""

    async def found(data: dict[str, Any]) -> None:
        candidate = data.get("candidate")
        if isinstance(candidate, dict):
            await relay(
                {
                    "candidate": candidate.get("candidate"),
                    "sdpMid": candidate.get("sdpMid"),
                    "sdpMLineIndex": candidate.get("sdpMLineIndex"),
                }
            )

    return found


async def start_loopback(
    *, user_id: int, offer: str, relay: CandidateRelay
) -> tuple[Loopback, str]:
    """Make a test's pipeline and self-connected endpoint and answer the browser's offer.

    Returns the test and the SDP answer. Once the answer is on its way to the browser, call
    `start_ice`; the endpoint's candidates go to `relay`. Raises MediaError (for the browser);
    on any failure, or if the caller is cancelled, what was made is released.
    """
    if running_for(user_id) >= MAX_TESTS_PER_USER:
        raise MediaError(
            "too_many_tests",
            f"You are running {MAX_TESTS_PER_USER} connection tests already; stop one first.",
        )
    try:
        url = await clients.server_for_new_room()
        pipeline = await create_pipeline(clients.media_client(url))
    except (KurentoError, MediaServerUnavailable) as error:
        raise media_error(error) from None
    try:
        endpoint = await _loopback_endpoint(pipeline, relay)
        answer = await endpoint.process_offer(offer)
    except BaseException as error:
        # Cancelled too (the socket's application was stopped): the release must still happen.
        await asyncio.shield(clients.release_quietly(url, pipeline.id))
        if isinstance(error, KurentoError | MediaServerUnavailable):
            raise media_error(error) from None
        raise
    test = Loopback(user_id, url, pipeline.id, endpoint.id)
    _running.setdefault(user_id, set()).add(pipeline.id)
    logger.info("user %s: connection test %s started on %s", user_id, pipeline.id, url)
    return test, answer


async def _loopback_endpoint(pipeline: MediaPipeline, relay: CandidateRelay) -> WebRtcEndpoint:
    """One send-receive WebRtcEndpoint whose media goes back out of it (ep.connect(ep)), its
    candidates relayed. One step at a time: a subscription still on its way when a failure
    releases the pipeline would outlive it in the client."""
    endpoint = await pipeline.create_webrtc_endpoint()
    turn_url = turn.media_server_turn_url()
    if turn_url is not None:  # before processOffer, which starts the endpoint's ICE agent
        await endpoint.set_turn_url(turn_url)
    await endpoint.on("IceCandidateFound", _candidate_relay(relay))
    await endpoint.connect(endpoint)
    return endpoint


async def start_ice(*, test: Loopback) -> None:
    """After the answer went out: let the endpoint gather its candidates (they go to the
    relay given to `start_loopback`)."""
    try:
        await test.endpoint().gather_candidates()
    except (KurentoError, MediaServerUnavailable) as error:
        raise media_error(error) from None


async def add_ice_candidate(*, test: Loopback, candidate: dict[str, Any]) -> None:
    """A browser's trickled candidate for the test's endpoint."""
    try:
        await test.endpoint().add_ice_candidate(
            candidate["candidate"], candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
        )
    except ObjectNotFound:
        return  # the media server lost it (it restarted): the test ends without media
    except (KurentoError, MediaServerUnavailable) as error:
        raise media_error(error) from None


async def stop_loopback(*, test: Loopback) -> bool:
    """Release the test's pipeline (its endpoint and event subscription with it). Safe to call
    more than once, and not stopped by the caller's cancellation. True when the media server
    let it go (or had lost it)."""
    pipelines = _running.get(test.user_id)
    if pipelines is not None:
        pipelines.discard(test.pipeline_id)
        if not pipelines:
            del _running[test.user_id]
    released = await asyncio.shield(clients.release_quietly(test.server_url, test.pipeline_id))
    logger.info("user %s: connection test %s released", test.user_id, test.pipeline_id)
    return released
