"""Seeded generator of hostile room-socket messages, shared by tests/media/test_fuzz.py and
bench/fuzz.py: valid messages of every type, mutated field by field (wrong types, numbers out
of any range, huge or odd strings, missing and extra fields, misdirected ids, broken SDP and
candidates), plus frames that are not JSON or not text."""

from __future__ import annotations

import json
import random
from typing import Any

BIG = 2**63


class Fuzzer:
    """Builds hostile messages from valid ones, reproducibly."""

    def __init__(self, seed: int, ids: list[int], offer: str) -> None:
        self.random = random.Random(seed)
        self.ids = ids
        self.offer = offer

    def value(self) -> Any:
        return self.random.choice(
            [
                None,
                True,
                -1,
                0,
                BIG,
                -BIG,
                2**200,
                1.5,
                float("1e308"),
                "",
                "x" * self.random.choice([1, 70, 5000, 70_000]),
                "\u202e\ud7ff\u0000",
                [],
                [1, [2, [3]]],
                {},
                {"candidate": 1},
                self.random.choice(self.ids),
                "publish",
            ]
        )

    def valid(self) -> dict[str, Any]:
        publisher = self.random.choice(self.ids)
        candidate = {
            "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 9 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        }
        return self.random.choice(
            [
                {"type": "ping"},
                {"type": "sync"},
                {"type": "publish", "sdp": self.offer},
                {"type": "unpublish"},
                {"type": "subscribe", "publisher": publisher, "sdp": self.offer},
                {"type": "unsubscribe", "publisher": publisher},
                {"type": "media_state", "audio": True, "video": False},
                {"type": "ice", "target": "publish", "candidate": candidate},
                {"type": "ice", "target": publisher, "candidate": candidate},
            ]
        )

    def message(self) -> str | bytes:
        kind = self.random.random()
        if kind < 0.05:
            return self.random.choice(
                ["", "null", "[]", "{", '{"type":', "[" * 5000 + "]" * 5000, "\ud800", "1e999"]
            )
        if kind < 0.08:
            return self.random.randbytes(self.random.randint(1, 64))
        message = self.valid()
        for _ in range(self.random.randint(0, 3)):
            action = self.random.random()
            if action < 0.4 and len(message) > 1:
                key = self.random.choice([k for k in message if k != "type"] or ["type"])
                message[key] = self.value()
            elif action < 0.55:
                message[self.random.choice(["id", "extra", "target", "sdp"])] = self.value()
            elif action < 0.7 and len(message) > 1:
                message.pop(self.random.choice(list(message)))
            elif action < 0.8 and "sdp" in message:
                message["sdp"] = "v=0\r\n" + self.random.choice(
                    ["garbage", "a=fingerprint:sha-256 00\r\n" * 50, self.offer[:200]]
                )
            elif action < 0.9 and isinstance(message.get("candidate"), dict):
                message["candidate"]["candidate"] = self.value()
            else:
                message["id"] = self.random.choice([1, "r", BIG, 2**53, -(2**53)])
        return json.dumps(message, allow_nan=True)
