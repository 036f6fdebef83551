"""Validation of browser messages, independent of any socket."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from signaling import protocol
from signaling.protocol import client


def test_known_messages_parse_to_typed_values():
    assert protocol.parse_client_message('{"type": "ping", "id": "a1"}') == protocol.Ping(id="a1")
    assert protocol.parse_client_message('{"type": "leave"}') == protocol.Leave(id=None)
    assert protocol.parse_client_message('{"type": "sync", "id": 3}') == protocol.Sync(id=3)


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("{", "bad_json", "JSON"),
        ('"ping"', "invalid", "object"),
        ("{}", "invalid", "type"),
        ('{"type": null}', "invalid", "type"),
        (
            '{"type": "nope"}',
            "unknown_type",
            "ice, leave, media_state, moderate_media, moderator, mute_all, ping, play, publish",
        ),
        ('{"type": "ping", "sdp": "x"}', "invalid", "sdp"),
        ('{"type": "ping", "id": true}', "invalid", "id"),
        ('{"type": "ping", "id": [1]}', "invalid", "id"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(text, code, fragment):
    with pytest.raises(protocol.ProtocolError) as error:
        protocol.parse_client_message(text)
    assert error.value.code == code
    assert fragment in error.value.message


def test_error_payload_carries_the_request_id():
    with pytest.raises(protocol.ProtocolError) as error:
        protocol.parse_client_message('{"type": "nope", "id": "r9"}')
    assert error.value.payload() == {
        "type": "error",
        "code": "unknown_type",
        "message": error.value.message,
        "id": "r9",
    }


def test_field_validation_covers_types_and_lengths():
    @dataclass(frozen=True)
    class Probe(protocol.ClientMessage):
        type_name: ClassVar[str] = "probe"
        sdp: str = field(metadata={"max_length": 10})
        count: int = 0
        note: str | None = None

    client._MESSAGE_TYPES["probe"] = Probe
    try:
        parsed = protocol.parse_client_message('{"type": "probe", "sdp": "v=0", "count": 2}')
        assert parsed == Probe(id=None, sdp="v=0", count=2, note=None)
        for text, fragment in [
            ('{"type": "probe"}', "needs the field 'sdp'"),
            ('{"type": "probe", "sdp": 5}', "must be a string"),
            ('{"type": "probe", "sdp": "x", "count": true}', "must be an integer"),
            ('{"type": "probe", "sdp": "x", "count": 1.5}', "must be an integer"),
            ('{"type": "probe", "sdp": "x", "note": 3}', "a string or null"),
            ('{"type": "probe", "sdp": "' + "y" * 11 + '"}', "longer than 10"),
        ]:
            with pytest.raises(protocol.ProtocolError) as error:
                protocol.parse_client_message(text)
            assert fragment in error.value.message, text
    finally:
        del client._MESSAGE_TYPES["probe"]


def test_media_messages_parse():
    offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n"
    offer += "a=fingerprint:sha-256 AA\r\n"
    text = json.dumps({"type": "publish", "sdp": offer, "id": 1})
    assert protocol.parse_client_message(text) == protocol.Publish(id=1, sdp=offer)
    ice = protocol.parse_client_message(
        '{"type": "ice", "target": 7, "candidate": {"candidate": "candidate:1 1 udp 1 '
        '127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "ab"}}'
    )
    assert isinstance(ice, protocol.Ice) and ice.publisher == 7
    own = protocol.parse_client_message(
        '{"type": "ice", "target": "publish", "candidate": {"candidate": "", "sdpMid": "0"}}'
    )
    assert isinstance(own, protocol.Ice) and own.publisher is None


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"type": "publish", "sdp": "hello"}, "SDP offer"),
        ({"type": "publish", "sdp": "v=0\r\na=ice-ufrag:u\r\n"}, "no media section"),
        (
            {"type": "publish", "sdp": "v=0\r\nm=audio 9 x\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n"},
            "no DTLS fingerprint",
        ),
        ({"type": "publish", "sdp": "v=0" + "x" * 60_000}, "longer than"),
        ({"type": "subscribe", "publisher": True, "sdp": "v=0"}, "'publisher'"),
        ({"type": "unsubscribe"}, "needs the field 'publisher'"),
        ({"type": "ice", "target": "all", "candidate": {"candidate": "", "sdpMid": "0"}}, "target"),
        ({"type": "ice", "target": 1, "candidate": []}, "'candidate'"),
        ({"type": "ice", "target": 1, "candidate": {"candidate": ""}}, "sdpMid"),
        (
            {"type": "ice", "target": 1, "candidate": {"candidate": "", "sdpMLineIndex": -1}},
            "0 to 63",
        ),
        ({"type": "ice", "target": 1, "candidate": {"candidate": "", "sdpMid": 3}}, "sdpMid"),
        (
            {"type": "ice", "target": 1, "candidate": {"candidate": "x" * 2000, "sdpMid": "0"}},
            "1024",
        ),
        (
            {"type": "ice", "target": 1, "candidate": {"candidate": "", "sdpMid": "0", "x": 1}},
            "field(s): x",
        ),
    ],
)
def test_media_messages_are_validated(message, fragment):
    import json

    with pytest.raises(protocol.ProtocolError) as error:
        protocol.parse_client_message(json.dumps(message))
    assert error.value.code == "invalid"
    assert fragment in error.value.message


def test_every_server_message_round_trips_and_malformed_events_are_refused():
    from signaling.protocol import server

    reset = protocol.MediaReset(reason="session_lost")
    assert reset.payload() == {"type": "media_reset", "reason": "session_lost"}
    assert protocol.server_message(reset.payload()) == reset
    assert protocol.Pong().payload() == {"type": "pong"}  # no id: none echoed
    assert protocol.Pong(id=3).payload() == {"type": "pong", "id": 3}
    for bad in (
        {"type": "no_such_event"},
        {"type": "media_reset"},  # missing reason
        {"type": "media_reset", "reason": 5},
        {"type": "participant_left", "participant_id": "7", "reason": "left"},
        {"type": "media_restored", "extra": True},
    ):
        with pytest.raises(ValueError):
            protocol.server_message(bad)
    assert "media_reset" in server.server_message_types()


def test_every_message_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    for kind in (*protocol.message_types(), *protocol.server_message_types()):
        assert f"`{kind}`" in doc, f"docs/protocol.md does not describe {kind}"
