"""TURN credentials (coturn's use-auth-secret scheme) and the ICE configuration browsers get."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from django.test import override_settings

from signaling import turn

TURN = {
    "TURN_URLS": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"],
    "TURN_SECRET": "s3cret",
    "TURN_CREDENTIAL_TTL": 600,
    "STUN_URLS": ["stun:stun.example.org:3478"],
}


@override_settings(**TURN)
def test_credentials_follow_coturn_rest_scheme():
    credentials = turn.credentials_for(42, now=1_700_000_000)
    assert credentials.username == "1700000600:42"
    assert credentials.expires_at == 1_700_000_600
    expected = hmac.new(b"s3cret", b"1700000600:42", hashlib.sha1).digest()
    assert base64.b64decode(credentials.password) == expected
    # Each participant gets its own; the media server's carry the bare expiry.
    assert turn.credentials_for(43, now=1_700_000_000).password != credentials.password
    assert turn.credentials_for(None, now=1_700_000_000).username == "1700000600"


@override_settings(**TURN)
def test_browsers_get_stun_and_turn_but_never_the_secret():
    ice = turn.ice_servers_for(7, now=1_700_000_000)
    assert ice["iceServers"][0] == {"urls": ["stun:stun.example.org:3478"]}
    relay = ice["iceServers"][1]
    assert relay["urls"] == TURN["TURN_URLS"]
    assert relay["username"] == "1700000600:7" and relay["credential"]
    assert "s3cret" not in repr(ice)
    assert ice["expiresAt"] == 1_700_000_600
    assert ice["iceTransportPolicy"] == "all"


@override_settings(TURN_URLS=[], TURN_SECRET="", STUN_URLS=[])
def test_without_turn_settings_a_lan_needs_nothing():
    assert turn.ice_servers_for(7) == {
        "iceServers": [],
        "iceTransportPolicy": "all",
        "expiresAt": None,
    }
    assert turn.media_server_turn_url() is None
    with pytest.raises(ValueError):
        turn.credentials_for(7)


@override_settings(**TURN, KMS_USE_TURN=True)
def test_the_media_server_gets_a_kurento_turn_url():
    url = turn.media_server_turn_url()
    assert url is not None
    user, _, address = url.partition("@")
    username, _, password = user.partition(":")
    assert username.isdigit() and password  # no colon in a Kurento user
    assert address == "turn.example.org:3478?transport=udp"
    with override_settings(TURN_URLS=["turns:t.example.org:5349", "turn:10.0.0.1?transport=tcp"]):
        assert turn.media_server_turn_url().endswith("@10.0.0.1:3478?transport=tcp")
    with override_settings(KMS_USE_TURN=False):
        assert turn.media_server_turn_url() is None
