"""Running a meeting from the page, in real Chromium through the product: the owner mutes and
allows someone from the people list (the media server stops and restarts carrying that
microphone to everyone), makes someone a moderator, removes a person (told, not reconnected),
and ends the meeting for everyone."""

from __future__ import annotations

import pytest

from tests.browser import WAIT_MS, Caller, audio_connections, people_of, wait_until

pytestmark = pytest.mark.browser


def open_actions(page, participant_id: str) -> None:
    """The people list's action menu for that person (the panel opened first if need be)."""
    if page.get_attribute("#people-button", "aria-expanded") != "true":
        page.click("#people-button")
    page.click(f"#participants li[data-participant-id='{participant_id}'] summary")


def test_the_owner_runs_the_meeting_from_the_people_list(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada, grace, alan = (
            make("modada", "Ada Lovelace"),
            make("modgrace", "Grace Hopper"),
            make("modalan", "Alan Turing"),
        )
        room_url = ada.create_room("Run well")
        for person in (grace, alan):
            person.open(room_url)
            person.wait_connected()
        ada.wait_video_from(grace)
        alan.wait_video_from(grace)
        everyone = 6  # each of three microphones carried to the two others
        wait_until(
            "every microphone carried", lambda: audio_connections(product.media_url) == everyone
        )
        grace_id, alan_id = grace.participant_id, alan.participant_id
        # Only moderators see the actions and the end button.
        assert grace.page.locator("#participants li summary").count() == 0
        assert grace.page.is_hidden("#end-meeting-button")

        # Ada mutes Grace: her microphone reaches nobody (two connections fewer on the media
        # server, whatever Grace's browser sends); Grace is told; the list says so.
        open_actions(ada.page, grace_id)
        ada.page.click("#participants button:has-text('Mute microphone')")
        wait_until(
            "Grace's sound cut", lambda: audio_connections(product.media_url) == everyone - 2
        )
        grace.page.wait_for_selector(
            "#room-notice:has-text('A moderator muted your microphone')", timeout=WAIT_MS
        )
        alan.page.wait_for_selector(
            f"#participants li[data-participant-id='{grace_id}'] .badge--blocked", state="attached"
        )
        # And allows her again.
        open_actions(ada.page, grace_id)
        ada.page.click("#participants button:has-text('Allow microphone')")
        wait_until("Grace's sound back", lambda: audio_connections(product.media_url) == everyone)

        # Ada makes Grace a moderator: Grace now has the actions and the end button.
        open_actions(ada.page, grace_id)
        ada.page.click("#participants button:has-text('Make moderator')")
        grace.page.wait_for_selector("#end-meeting-button", state="attached", timeout=WAIT_MS)
        grace.page.wait_for_function("!document.getElementById('end-meeting-button').hidden")
        alan.page.wait_for_selector(
            f"#participants li[data-participant-id='{grace_id}'] .badge--moderator",
            state="attached",
        )

        # Grace removes Alan (after confirming): Alan is told and stays out.
        grace.page.on("dialog", lambda dialog: dialog.accept())
        open_actions(grace.page, alan_id)
        grace.page.click("#participants button:has-text('Remove from the meeting')")
        alan.page.wait_for_selector("#room-status[data-state=removed]", timeout=WAIT_MS)
        ada.wait_not_sees("Alan Turing")
        alan.page.goto(room_url)
        alan.page.click("#join-button")
        alan.page.wait_for_selector("#room-status[data-state=refused]", timeout=WAIT_MS)

        # Ada ends the meeting for everyone from the room's details.
        ada.page.on("dialog", lambda dialog: dialog.accept())
        ada.page.click("#details-button")
        ada.page.click("#end-meeting-button")
        grace.page.wait_for_selector("#room-status[data-state=closed]", timeout=WAIT_MS)
        ada.page.wait_for_selector("#room-status[data-state=closed]", timeout=WAIT_MS)
        wait_until(
            "the meeting's media released", lambda: audio_connections(product.media_url) == 0
        )
