"""A daphne worker that dies (SIGKILL) or is stopped (SIGTERM) mid-call and comes back: the
pages reconnect, take over from their old participants (`?resume=`), and the media server ends
up holding what it held before, no more (before the fix: 4 -> 8 -> 12 endpoints)."""

from __future__ import annotations

import time

import pytest

from tests.browser import Heal, in_a_call, media_server_objects, same_document, wait_until

pytestmark = pytest.mark.browser


def _endpoints(url: str) -> int:
    return sum(len(children) for children in media_server_objects(url).values())


def test_daphne_killed_and_stopped_then_resumed_releases_what_it_held(callers_on, product_factory):
    product = product_factory()
    ada = callers_on(product, "daphneada", "Ada Lovelace")
    grace = callers_on(product, "daphnegrace", "Grace Hopper")
    in_a_call(ada, grace)
    before = _endpoints(product.media_url)
    assert before == 4  # two publishing, two receiving

    for stop in (product.crash, product.terminate):
        heal = Heal(ada, grace)
        stop()
        product.serve()
        heal.fault_over()
        healed = heal.wait(timeout=40)
        print(f"daphne {stop.__name__}: video again {healed:.2f} s after it listened again")
        wait_until(
            f"the media server back to {before} endpoints after {stop.__name__}",
            lambda: _endpoints(product.media_url) == before,
        )
        time.sleep(1.0)  # and it stays there
        assert _endpoints(product.media_url) == before
        assert len(media_server_objects(product.media_url)) == 1
    assert same_document(ada, grace), "a page reloaded"

    for person in (ada, grace):
        person.page.click("#leave-button")
    wait_until("the pipeline released", lambda: media_server_objects(product.media_url) == {})
