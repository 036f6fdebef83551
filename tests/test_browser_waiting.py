"""A meeting that lets people in one by one, and a moderator's controls on the tiles, in real
Chromium through the product: the person asking waits on the pre-join screen with their camera
preview; the owner hears of it (a count and a notice), lets them in, and they join without a
reload; the owner mutes them from their tile (the media server stops carrying it) and, in a
room where people may not unmute themselves, their microphone button asks to speak instead;
"Everyone joins muted"; "Mute everyone"; a person turned away is told and may ask again."""

from __future__ import annotations

import pytest

from tests.browser import WAIT_MS, Caller, audio_connections, people_of, wait_until

pytestmark = pytest.mark.browser


def test_waiting_room_tile_menu_and_asking_to_speak(chromium, product):
    with people_of(Caller, chromium, product) as make:
        ada, grace, alan = (
            make("waitada", "Ada Lovelace"),
            make("waitgrace", "Grace Hopper"),
            make("waitalan", "Alan Turing"),
        )
        room_url = ada.create_room(
            "Door policy", ask_to_join=True, self_unmute=False, join_muted=True
        )

        # Grace asks, and waits with her camera preview.
        grace.page.goto(room_url)
        assert grace.page.inner_text("#join-button").strip() == "Ask to join"
        grace.join()
        grace.page.wait_for_selector("#room-status[data-state=waiting]", timeout=WAIT_MS)
        assert grace.page.is_visible("#waiting-card")
        assert grace.page.get_attribute("#room", "data-phase") == "prejoin"
        grace.page.wait_for_function(
            "document.querySelector('#stage .tile--local video')"
            "?.getVideoPlaybackQuality().totalVideoFrames > 5",
            timeout=WAIT_MS,
        )
        # Ada is told: a count on People and a notice.
        ada.page.wait_for_selector("#waiting-count:text-is('1')", timeout=WAIT_MS)
        ada.page.wait_for_selector("#room-notice:has-text('Grace Hopper asks to join')")
        ada.page.click("#people-button")
        ada.page.click("button[aria-label='Let Grace Hopper in']")
        grace.wait_connected()
        ada.wait_video_from(grace)
        grace.wait_video_from(ada)
        assert ada.page.is_hidden("#waiting-count") and ada.page.is_hidden("#waiting-section")
        # Everyone joins muted: her page starts with the microphone off, and the media server
        # carries only Ada's. She may not unmute herself here: the button raises her hand to
        # ask to speak instead.
        grace.page.wait_for_selector("#mic-button[aria-pressed=true]", timeout=WAIT_MS)
        wait_until(
            "only Ada's microphone carried", lambda: audio_connections(product.media_url) == 1
        )
        grace.page.click("#mic-button")
        grace.page.wait_for_selector(
            "#room-notice:has-text('Raise your hand to ask to speak')", timeout=WAIT_MS
        )
        grace.page.wait_for_selector("#hand-button[aria-pressed=true]", timeout=WAIT_MS)
        assert grace.page.get_attribute("#mic-button", "aria-pressed") == "true"
        assert audio_connections(product.media_url) == 1
        grace_id = grace.participant_id
        ada.page.wait_for_selector(
            f"#participants li[data-participant-id='{grace_id}'] .badge--blocked", state="attached"
        )

        # From Grace's tile, Ada allows her microphone; Grace unmutes herself.
        tile = ada.page.locator(f"#stage .tile[data-participant-id='{grace_id}']")
        tile.hover()
        tile.locator(".tile__actions summary").click()
        tile.locator("button:has-text('Allow microphone')").click()
        wait_until("Grace's sound carried", lambda: audio_connections(product.media_url) == 2)
        grace.page.click("#mic-button")
        grace.page.wait_for_selector("#mic-button[aria-pressed=false]", timeout=WAIT_MS)
        # And mutes her again from the tile: the media server stops it, her page turns it off.
        tile.hover()
        tile.locator(".tile__actions summary").click()
        tile.locator("button:has-text('Mute microphone')").click()
        wait_until("Grace's sound cut", lambda: audio_connections(product.media_url) == 1)
        grace.page.wait_for_selector("#mic-button[aria-pressed=true]", timeout=WAIT_MS)
        tile.hover()
        tile.locator(".tile__actions summary").click()
        tile.locator("button:has-text('Allow microphone')").click()
        wait_until("Grace's sound back", lambda: audio_connections(product.media_url) == 2)
        grace.page.click("#mic-button")
        grace.page.wait_for_selector("#mic-button[aria-pressed=false]", timeout=WAIT_MS)

        # Mute everyone: everyone but the moderators (Grace).
        ada.page.on("dialog", lambda dialog: dialog.accept())
        ada.page.click("#mute-all-button")
        wait_until("everyone but Ada muted", lambda: audio_connections(product.media_url) == 1)
        grace.page.wait_for_selector("#mic-button[aria-pressed=true]", timeout=WAIT_MS)

        # Alan asks and is turned away: told, and may ask again.
        alan.page.goto(room_url)
        alan.join()
        alan.page.wait_for_selector("#room-status[data-state=waiting]", timeout=WAIT_MS)
        ada.page.click("button[aria-label='Turn Alan Turing away']", timeout=WAIT_MS)
        alan.page.wait_for_selector(
            "#ended-message:has-text('did not let you in')", timeout=WAIT_MS
        )
        alan.page.click("#retry-button")
        alan.page.wait_for_selector("#room-status[data-state=waiting]", timeout=WAIT_MS)
        ada.page.wait_for_selector("#waiting-list li:has-text('Alan Turing')", timeout=WAIT_MS)
        # He cancels: he leaves the list at once.
        alan.page.click("#waiting-cancel")
        alan.page.wait_for_selector("#room-status[data-state=ready]", timeout=WAIT_MS)
        ada.page.wait_for_selector("#waiting-section", state="hidden", timeout=WAIT_MS)
