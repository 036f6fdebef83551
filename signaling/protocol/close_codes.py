"""Close codes of the room socket: defined here once; the page reads them from its config
(`for_browser`), so the two ends cannot disagree. 4000-4999 are the application's own."""

from __future__ import annotations

CLOSE_LEFT = 4000  # the browser said `leave`
CLOSE_STALE = 4408  # the connection's presence expired while it lived: reconnect
CLOSE_ROOM_CLOSED = 4410  # the room was closed or deleted, or the meeting ended
CLOSE_REMOVED = 4406  # a moderator removed the participant (a rejoin is refused the same way)
CLOSE_INTERNAL_ERROR = 1011  # an unexpected error ended the connection: reconnect
CLOSE_FOR_REFUSAL = {
    "login_required": 4401,
    "private": 4403,
    "not_found": 4404,
    "removed": CLOSE_REMOVED,
    "banned": CLOSE_REMOVED,
    "denied": 4403,
    "full": 4409,
    "closed": 4410,
    "locked": 4423,
}


def for_browser() -> dict[str, object]:
    """What the page needs: the code of its own goodbye, and the codes after which the server
    has said why (`refused`, `room_closed`) or the person left, so reconnecting is pointless."""
    final = {CLOSE_LEFT, CLOSE_ROOM_CLOSED, *CLOSE_FOR_REFUSAL.values()}
    return {"left": CLOSE_LEFT, "final": sorted(final)}
