"""System checks of contradictory settings: each fires on its bad configuration, none on the
defaults or on a production-like one, and `manage.py check` fails on an Error."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks

from signaling.checks import TAG

ROOT = Path(__file__).resolve().parent.parent

# Every setting the checks read, and those the test settings put into the environment: the
# subprocesses must see the product's defaults, not this machine's or the test run's values.
CHECKED_SETTINGS = (
    "TURN_URLS",
    "TURN_SECRET",
    "STUN_URLS",
    "TURN_CREDENTIAL_TTL",
    "ICE_TRANSPORT_POLICY",
    "KMS_USE_TURN",
    "KMS_URL",
    "KMS_URLS",
    "KMS_CONNECT_TIMEOUT",
    "KMS_REQUEST_TIMEOUT",
    "PRESENCE_HEARTBEAT_SECONDS",
    "PRESENCE_STALE_SECONDS",
    "SIGNALING_MAX_MESSAGE_BYTES",
    "SIGNALING_RATE_PER_SECOND",
    "SIGNALING_RATE_BURST",
    "ROOM_MAX_PARTICIPANTS_LIMIT",
    "ROOM_DEFAULT_MAX_PARTICIPANTS",
)

PRODUCTION_LIKE: dict[str, Any] = {
    "STUN_URLS": ["stun:turn.example.org:3478"],
    "TURN_URLS": [
        "turn:turn.example.org:3478?transport=udp",
        "turn:turn.example.org:3478?transport=tcp",
        "turns:turn.example.org:5349",
    ],
    "TURN_SECRET": "a-long-random-shared-secret",
    "TURN_CREDENTIAL_TTL": 6 * 3600,
    "ICE_TRANSPORT_POLICY": "relay",
    "KMS_USE_TURN": True,
    "KMS_URLS": ["ws://10.0.0.5:8888/kurento", "wss://kms2.example.org/kurento"],
    "KMS_CONNECT_TIMEOUT": 3.0,
    "KMS_REQUEST_TIMEOUT": 10.0,
    "PRESENCE_HEARTBEAT_SECONDS": 15.0,
    "PRESENCE_STALE_SECONDS": 60.0,
    "SIGNALING_MAX_MESSAGE_BYTES": 64 * 1024,
    "SIGNALING_RATE_PER_SECOND": 50.0,
    "SIGNALING_RATE_BURST": 300,
    "ROOM_MAX_PARTICIPANTS_LIMIT": 50,
    "ROOM_DEFAULT_MAX_PARTICIPANTS": 10,
}


def conference_ids() -> list[str]:
    return [message.id for message in run_checks(tags=[TAG])]


def configure(settings, **values: Any) -> None:
    for name, value in values.items():
        setattr(settings, name, value)


def test_the_default_settings_pass():
    assert conference_ids() == []


def test_a_production_like_configuration_passes(settings):
    configure(settings, **PRODUCTION_LIKE)
    assert conference_ids() == []


def test_every_message_has_a_hint(settings):
    configure(
        settings,
        TURN_URLS=["http://turn.example.org"],
        TURN_SECRET="",
        STUN_URLS=["turn:x"],
        ICE_TRANSPORT_POLICY="relay",
        KMS_USE_TURN=True,
        KMS_URLS=["http://kms", "http://kms"],
        PRESENCE_STALE_SECONDS=1,
        TURN_CREDENTIAL_TTL=60,
        SIGNALING_RATE_BURST=0,
        SIGNALING_RATE_PER_SECOND=0,
        SIGNALING_MAX_MESSAGE_BYTES=1000,
        KMS_CONNECT_TIMEOUT=0,
    )
    messages = run_checks(tags=[TAG])
    assert len(messages) >= 10
    for message in messages:
        assert message.id.startswith("conference.")
        assert message.msg and message.hint


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # TURN_URLS without TURN_SECRET silently switches TURN off.
        ({"TURN_URLS": ["turn:turn.example.org"], "TURN_SECRET": ""}, ["conference.E001"]),
        ({"TURN_URLS": [], "TURN_SECRET": "secret"}, ["conference.W001"]),
        ({"ICE_TRANSPORT_POLICY": "relay"}, ["conference.E002"]),
        (
            {"ICE_TRANSPORT_POLICY": "relay", "TURN_URLS": [], "TURN_SECRET": "secret"},
            ["conference.W001", "conference.E002"],
        ),
        ({"KMS_USE_TURN": True}, ["conference.E003"]),
        (
            {
                "KMS_USE_TURN": True,
                "TURN_URLS": ["turns:turn.example.org:5349"],
                "TURN_SECRET": "secret",
            },
            ["conference.W002"],
        ),
        (
            {
                "TURN_URLS": ["stun:turn.example.org", "turn://turn.example.org", "turn:"],
                "TURN_SECRET": "secret",
            },
            ["conference.E004"] * 3,
        ),
        ({"TURN_URLS": "turn:turn.example.org", "TURN_SECRET": "secret"}, ["conference.E004"]),
        (
            {"STUN_URLS": ["turn:stun.example.org", "stun.example.org", "stun:host:port"]},
            ["conference.E005"] * 3,
        ),
        ({"KMS_URLS": []}, ["conference.E006"]),
        (
            {"KMS_URLS": ["http://kms:8888/kurento", "kms:8888", "ws://", "ws://kms:x/"]},
            ["conference.E007"] * 4,
        ),
        (
            {"KMS_URLS": ["ws://kms:8888/kurento", "ws://kms:8888/kurento"]},
            ["conference.W003"],
        ),
        ({"PRESENCE_HEARTBEAT_SECONDS": 0}, ["conference.E008"]),
        # Exactly twice the heartbeat is not enough: one late refresh and the peer is reaped.
        ({"PRESENCE_STALE_SECONDS": 30.0}, ["conference.E009"]),
        ({"PRESENCE_HEARTBEAT_SECONDS": 40.0}, ["conference.E009"]),
        ({"TURN_CREDENTIAL_TTL": 0}, ["conference.E010"]),
        ({"TURN_CREDENTIAL_TTL": 599}, ["conference.W004"]),
        ({"SIGNALING_RATE_BURST": 0}, ["conference.E011"]),
        ({"SIGNALING_RATE_PER_SECOND": 0.0}, ["conference.E012"]),
        ({"SIGNALING_RATE_PER_SECOND": -1}, ["conference.E012"]),
        ({"SIGNALING_MAX_MESSAGE_BYTES": 8 * 1024}, ["conference.W005"]),
        ({"KMS_CONNECT_TIMEOUT": 0}, ["conference.E013"]),
        ({"KMS_REQUEST_TIMEOUT": -5.0}, ["conference.E013"]),
        ({"KMS_CONNECT_TIMEOUT": 0, "KMS_REQUEST_TIMEOUT": 0}, ["conference.E013"] * 2),
        ({"ROOM_MAX_PARTICIPANTS_LIMIT": 1}, ["conference.E014"]),
        ({"ROOM_DEFAULT_MAX_PARTICIPANTS": 80}, ["conference.W006"]),
        ({"SIGNALING_RATE_BURST": "300"}, ["conference.E015"]),
        ({"PRESENCE_STALE_SECONDS": None}, ["conference.E015"]),
        ({"KMS_FAILOVER_SECONDS": 0}, ["conference.E016"]),
        ({"SIGNALING_INBOUND_BUFFER_BYTES": 32 * 1024}, ["conference.E017"]),
    ],
)
def test_each_check_fires_on_its_bad_configuration(settings, values, expected):
    configure(settings, **values)
    assert sorted(conference_ids()) == sorted(expected)


def test_the_boundaries_pass(settings):
    configure(
        settings,
        PRESENCE_HEARTBEAT_SECONDS=15.0,
        PRESENCE_STALE_SECONDS=30.5,
        TURN_CREDENTIAL_TTL=600,
        SIGNALING_RATE_BURST=1,
        SIGNALING_MAX_MESSAGE_BYTES=16 * 1024,
        ROOM_MAX_PARTICIPANTS_LIMIT=2,
        ROOM_DEFAULT_MAX_PARTICIPANTS=2,
    )
    assert conference_ids() == []


def test_missing_settings_do_not_crash_the_checks(settings):
    for name in CHECKED_SETTINGS:
        delattr(settings, name)
    # Only the media servers have no sensible default: without them no call can work.
    assert conference_ids() == ["conference.E006"]


def test_the_checks_run_with_every_other_check(settings):
    # Registered by the app: a plain `run_checks()` (what `manage.py check` runs) includes them.
    configure(settings, TURN_URLS=["turn:turn.example.org"], TURN_SECRET="")
    assert "conference.E001" in [message.id for message in run_checks()]


def _manage_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from tests.settings import TEST_ENV_DEFAULTS

    drop = {*TEST_ENV_DEFAULTS, *CHECKED_SETTINGS, "DJANGO_SETTINGS_MODULE", "REDIS_URL"}
    clean = {name: value for name, value in os.environ.items() if name not in drop}
    base = {"SECRET_KEY": secrets.token_urlsafe(50), "DEBUG": "true"}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**clean, **base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manage_py_check_passes_the_default_configuration():
    result = _manage_check({})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "conference." not in result.stdout + result.stderr


def test_manage_py_check_fails_on_an_error():
    result = _manage_check({"TURN_URLS": "turn:turn.example.org:3478", "TURN_SECRET": ""})
    assert result.returncode != 0
    assert "conference.E001" in result.stderr
    assert "TURN_SECRET" in result.stderr
