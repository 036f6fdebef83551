"""A media server that dies mid-call: killed and started again at once, the call heals within
seconds of it listening again, without a reload; killed for good with a second one
configured, the room moves there. Two Chromium callers_on, daphne and media server processes."""

from __future__ import annotations

import pytest

from tests.browser import Heal, in_a_call, media_server_objects, same_document, wait_until
from tests.live import MediaServerProcess

pytestmark = pytest.mark.browser

HEAL_SECONDS = 5.0  # the bound: frames again this soon after the server listens again


def test_a_killed_and_restarted_media_server_heals_the_call(callers_on, product_factory):
    product = product_factory()
    assert product.media is not None
    ada = callers_on(product, "crashada", "Ada Lovelace")
    grace = callers_on(product, "crashgrace", "Grace Hopper")
    in_a_call(ada, grace)

    heal = Heal(ada, grace)
    product.media.kill()
    product.media.start()  # the same port; returns once it listens
    heal.fault_over()
    healed = heal.wait(timeout=30)
    print(f"media server restart: video again {healed:.2f} s after it listened")
    assert healed <= HEAL_SECONDS, f"video came back only {healed:.1f} s after the restart"
    assert same_document(ada, grace), "a page reloaded"
    for person in (ada, grace):
        person.page.wait_for_selector("#room-notice:has-text('Media is back')")
    grace.wait_video_from(ada)
    ada.wait_video_from(grace)
    # One rebuilt pipeline with both people's endpoints, nothing left of the old one.
    objects = media_server_objects(product.media_url)
    assert len(objects) == 1 and len(next(iter(objects.values()))) == 4, objects

    for person in (ada, grace):
        person.page.click("#leave-button")
    wait_until("the pipeline released", lambda: media_server_objects(product.media_url) == {})


def test_a_media_server_that_never_returns_moves_the_room(callers_on, product_factory, tmp_path):
    env = {"PRESENCE_HEARTBEAT_SECONDS": "2"}
    first = MediaServerProcess(tmp_path, env).start()
    second = MediaServerProcess(tmp_path, env).start()
    try:
        product = product_factory(
            {
                "KMS_URL": first.url,
                "KMS_URLS": f"{first.url},{second.url}",
                "KMS_FAILOVER_SECONDS": "2",
            }
        )
        ada = callers_on(product, "moveada", "Ada Lovelace")
        grace = callers_on(product, "movegrace", "Grace Hopper")
        in_a_call(ada, grace)
        assert len(media_server_objects(first.url)) == 1  # the first listed, on a tie

        heal = Heal(ada, grace)
        first.kill()  # for good
        heal.fault_over()  # the clock starts at its death: nothing comes back
        moved = heal.wait(timeout=30)
        print(f"media server lost for good: video again {moved:.2f} s after it died")
        assert same_document(ada, grace), "a page reloaded"
        objects = media_server_objects(second.url)
        assert len(objects) == 1 and len(next(iter(objects.values()))) == 4, objects
        for person in (ada, grace):  # told, and told when it is over
            person.page.wait_for_selector("#room-notice:has-text('Media is back')")

        for person in (ada, grace):
            person.page.click("#leave-button")
        wait_until("the pipeline released", lambda: media_server_objects(second.url) == {})
    finally:
        first.stop()
        second.stop()


def test_a_killed_worker_rebuilds_only_the_rooms_it_held(callers_on, product_factory):
    """`--workers 2`: two rooms on two worker processes. A worker killed takes one room's
    pipeline: that room heals without a reload, the other's pipeline and call go on."""
    product = product_factory(media_args=("--workers", "2"))
    assert product.media is not None
    ada = callers_on(product, "wkada", "Ada Lovelace")
    grace = callers_on(product, "wkgrace", "Grace Hopper")
    in_a_call(ada, grace, "Worker room one")
    (first_pipeline,) = media_server_objects(product.media_url)
    bob = callers_on(product, "wkbob", "Bob Kahn")
    carol = callers_on(product, "wkcarol", "Carol Shaw")
    in_a_call(bob, carol, "Worker room two")
    (second_pipeline,) = set(media_server_objects(product.media_url)) - {first_pipeline}
    dead = product.media.worker_of(first_pipeline)
    assert product.media.worker_of(second_pipeline) != dead

    heal = Heal(ada, grace)
    untouched = Heal(bob, carol)
    product.media.kill_worker(first_pipeline)
    heal.fault_over()
    untouched.fault_over()
    healed = heal.wait(timeout=30)
    print(f"worker killed: video again {healed:.2f} s after it died")
    assert healed <= HEAL_SECONDS, f"video came back only {healed:.1f} s after the kill"
    assert same_document(ada, grace, bob, carol), "a page reloaded"
    untouched.wait(timeout=5)  # the other room's video never stopped
    assert not untouched.renegotiated(bob) and not untouched.renegotiated(carol)
    objects = media_server_objects(product.media_url)
    assert second_pipeline in objects and first_pipeline not in objects, objects
    assert len(objects) == 2 and all(len(children) == 4 for children in objects.values())

    for person in (ada, grace, bob, carol):
        person.page.click("#leave-button")
    wait_until("the pipelines released", lambda: media_server_objects(product.media_url) == {})
