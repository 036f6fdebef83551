"""The connection-test WebSocket (ws/connection-test/): "Test camera and connection" on the
pre-join screen, before the room socket connects and without a room participant.

Thin, like the room consumer: it checks that the user is logged in, validates what the browser
sends (signaling.protocol), and asks signaling.media.loopback to act. It runs one test at a time
and holds that test's ids itself; nothing goes to the database. The test's media is released on
`loopback_stop`, when the socket closes (however it closes), after the time limit even if the
browser never says stop, and when anything unexpected fails here. docs/protocol.md ("Connection
test") describes the messages.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.utils.translation import gettext

from signaling import protocol, turn
from signaling.media import loopback
from signaling.media.errors import MediaError
from signaling.sockets import TypedSocketConsumer

logger = logging.getLogger(__name__)


class ConnectionTestConsumer(TypedSocketConsumer):
    user_id: int | None = None  # None: refused (anonymous)
    test: loopback.Loopback | None = None
    serial = 0  # counts this socket's tests: candidates of an earlier one are not sent
    limit: asyncio.Task[None] | None = None

    parse = staticmethod(protocol.parse_connection_test_message)

    @property
    def subject(self) -> str:
        return f"connection test of user {self.user_id or '-'}"

    @property
    def serving(self) -> bool:
        return self.user_id is not None  # not refused

    async def release_after_failure(self) -> None:
        await self._stop(reason=None)

    async def connect(self) -> None:
        # Accept first: a refused handshake reaches the browser as a bare 1006 with no reason.
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.send_message(
                protocol.Refused(
                    reason="login_required",
                    message=gettext("Log in to test your camera and connection."),
                )
            )
            await self.close(code=protocol.CLOSE_FOR_REFUSAL["login_required"])
            return
        self.user_id = user.pk
        # The TURN credentials name the user: the test has no participant. A test lasts a minute
        # at most, far less than their lifetime; a later test opens a new socket and gets new ones.
        await self.send_message(
            protocol.LoopbackReady(
                ice=turn.ice_servers_for(user.pk), time_limit=loopback.TIME_LIMIT_SECONDS
            )
        )

    async def disconnect(self, code: int) -> None:
        self.closing = True  # the socket is gone: a time limit running out now sends nothing
        # However the socket closed (stop or not, tab closed, network lost), the test goes.
        await self._stop(reason=None)

    async def handle(self, message: protocol.ClientMessage) -> None:
        match message:
            case protocol.Ping():
                await self.send_message(protocol.Pong(id=message.id))
            case protocol.LoopbackStart(sdp=offer):
                await self._start(offer, message.id)
            case protocol.LoopbackIce(candidate=candidate):
                await self._add_candidate(candidate, message.id)
            case protocol.LoopbackStop():
                await self._stop(reason="requested", ref=message.id)

    # --- the test -------------------------------------------------------------------------
    async def _start(self, offer: str, ref: str | int | None) -> None:
        assert self.user_id is not None
        if self.test is not None:
            await self.reply_error(
                protocol.ProtocolError(
                    "conflict", "A connection test is already running here; stop it first.", ref
                )
            )
            return
        self.serial += 1
        try:
            test, answer = await loopback.start_loopback(
                user_id=self.user_id, offer=offer, relay=self._relay(self.serial)
            )
        except MediaError as error:
            await self.reply_error(protocol.ProtocolError(error.code, error.message, ref))
            return
        self.test = test
        self.limit = asyncio.create_task(self._time_limit(test))
        await self.send_message(protocol.LoopbackStarted(sdp=answer, id=ref))
        try:
            await loopback.start_ice(test=test)
        except MediaError as error:
            if self.test is test:  # not stopped meanwhile (the time limit, say)
                await self.reply_error(protocol.ProtocolError(error.code, error.message, ref))
                await self._stop(reason="failed")

    async def _add_candidate(self, candidate: dict[str, Any], ref: str | int | None) -> None:
        test = self.test
        if test is None or not candidate["candidate"]:
            # No test runs (one just ended, its late candidates still coming), or "" marks
            # the end of candidates: nothing to do.
            return
        try:
            await loopback.add_ice_candidate(test=test, candidate=candidate)
        except MediaError as error:
            await self.reply_error(protocol.ProtocolError(error.code, error.message, ref))

    async def _stop(self, *, reason: str | None, ref: str | int | None = None) -> None:
        """Release the running test, if any; tell the browser unless `reason` is None (the
        socket is gone). The test is taken from this consumer before anything is awaited, so
        that it is released exactly once whoever stops it."""
        test, self.test = self.test, None
        limit, self.limit = self.limit, None
        if limit is not None and limit is not asyncio.current_task():
            limit.cancel()
        if test is not None:
            await loopback.stop_loopback(test=test)
        if reason is not None:
            await self.send_message(protocol.LoopbackStopped(reason=reason, id=ref))

    async def _time_limit(self, test: loopback.Loopback) -> None:
        """Stop the test after the time limit, even if the browser never says stop."""
        await asyncio.sleep(loopback.TIME_LIMIT_SECONDS)
        if self.test is not test:
            return
        logger.info(
            "user %s: connection test %s reached its time limit", test.user_id, test.pipeline_id
        )
        try:
            await self._stop(reason="time_limit")
        except Exception:  # a task of its own: nobody else would hear of it
            logger.exception(
                "stopping connection test %s at its time limit failed", test.pipeline_id
            )

    def _relay(self, serial: int) -> loopback.CandidateRelay:
        """Where the media server's candidates for test `serial` go: through the channel layer
        to this consumer, which sends them in its own order and only while that test runs."""
        layer, channel = self.channel_layer, self.channel_name

        async def relay(candidate: dict[str, Any]) -> None:
            await layer.send(
                channel, {"type": "loopback.candidate", "serial": serial, "candidate": candidate}
            )

        return relay

    async def loopback_candidate(self, event: dict[str, Any]) -> None:
        """A candidate of the test's endpoint on the media server (see _relay)."""
        if self.test is not None and event["serial"] == self.serial:
            await self.send_message(
                protocol.IceCandidate(target="loopback", candidate=event["candidate"])
            )
