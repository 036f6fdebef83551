"""bench.subscriber_cost's attribution of py-spy samples: the first matching bucket wins, frames
anywhere in the stack count, and the per-subscriber figures are scaled to /proc CPU."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench import subscriber_cost

LOOP = (
    "<module> (mediaserver/__main__.py:63);main (mediaserver/__main__.py:55);"
    "run (asyncio/runners.py:118)"
)


@pytest.mark.parametrize(
    ("frames", "bucket"),
    [
        (
            "_run_rtcp (aiortc/rtcrtpsender.py:434);protect_rtcp (pylibsrtp/__init__.py:1)",
            "RTCP out: sender reports",
        ),
        ("MediaHub._send_reports (mediaserver/forwarding.py:200)", "RTCP out: sender reports"),
        (
            "datagram_received (aioice/ice.py:1);_recv_next (aiortc/rtcdtlstransport.py:9);"
            "_handle_rtcp_data (aiortc/rtcdtlstransport.py:602)",
            "RTCP in",
        ),
        (
            "_handle_rtp_data (aiortc/rtcdtlstransport.py:614);"
            "MediaHub.push (mediaserver/forwarding.py:1)",
            "hub and send path",
        ),
        ("Connection.request_received (aioice/ice.py:1)", "ICE: peers' checks answered"),
        ("Connection.query_consent (aioice/ice.py:1250)", "ICE: own consent checks"),
        ("StunProtocol.datagram_received (aioice/ice.py:1)", "datagram hand-off (aioice to DTLS)"),
        ("", subscriber_cost.LOOP),
        ("json.dumps (json/__init__.py:1)", subscriber_cost.OTHER),
    ],
)
def test_samples_go_to_the_first_matching_bucket(frames: str, bucket: str) -> None:
    stack = LOOP + (";" + frames if frames else "")
    assert subscriber_cost.classify(stack) == bucket


def test_raw_output_is_counted_by_bucket(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        f"{LOOP};Connection.query_consent (aioice/ice.py:1250) 7\n"
        f"{LOOP} 3\n"
        f"{LOOP};Connection.query_consent (aioice/ice.py:1258) 2\n"
    )
    assert subscriber_cost.read_samples(raw) == Counter(
        {"ICE: own consent checks": 9, subscriber_cost.LOOP: 3}
    )
