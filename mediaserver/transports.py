"""The ICE and DTLS state of a WebRtcEndpoint's transports, reported as KMS reports it.

KMS numbers its ICE streams (libnice's stream ids, from 1; with BUNDLE there is one) and uses that
number in every ICE and DTLS report: IceComponentStateChanged (as an int), NewCandidatePairSelected,
getICECandidatePairs, getIceConnectionState and DtlsConnectionStateChange (as a string). A
`MediaStream` is one aiortc ICE transport with its DTLS transport under that number, and turns
their state changes into those events, so that every report of one stream agrees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceTransport, candidate_from_aioice
from aiortc.sdp import candidate_to_sdp

from .objects import complex_value

# KMS's component states in the order one stream goes through them on its way up; a stream
# that skips one (aiortc checks before the client asked to gather) still reports each, in order.
ICE_PROGRESS = ("DISCONNECTED", "GATHERING", "CONNECTING", "CONNECTED", "READY")
ICE_COMPONENT = 1  # rtcp-mux: RTP and RTCP share component 1
# KMS watches the DTLS state of both its DTLS elements, the encoder and the decoder.
DTLS_ELEMENTS = ("dtlssrtpenc", "dtlssrtpdec")

Emit = Callable[..., None]


class MediaStream:
    """One ICE stream of an endpoint: its ICE component state, selected pair and DTLS state."""

    def __init__(
        self,
        stream_id: int,
        ice: RTCIceTransport,
        dtls: RTCDtlsTransport,
        *,
        bundled: bool,
        emit: Emit,
    ) -> None:
        self.stream_id = stream_id
        self.ice = ice
        self.dtls = dtls
        self.ice_state = "DISCONNECTED"
        self.dtls_state = ""
        self.pair: dict[str, Any] | None = None
        self._emit = emit
        self._component = "bundle" if bundled else "rtcpmux"
        ice.on("statechange", self._on_ice_state)
        dtls.on("statechange", self._on_dtls_state)
        # Whatever happened before the stream was watched is reported now.
        self._on_dtls_state()
        self._on_ice_state()

    # -- ICE ------------------------------------------------------------------------------------

    def gathering(self) -> None:
        self._advance("GATHERING")

    def _on_ice_state(self) -> None:
        state = self.ice.state
        if state == "checking":
            self._advance("CONNECTING")
        elif state == "completed":
            self._advance("CONNECTING")
            if self.ice_state == "CONNECTING":
                self._announce_pair()
            self._advance("READY")
        elif state == "failed":
            self._set_ice_state("FAILED")
        elif state == "closed":
            self._set_ice_state("DISCONNECTED")

    def _advance(self, target: str) -> None:
        """Move up to `target`, reporting each state on the way; never back down."""
        if self.ice_state not in ICE_PROGRESS:
            return  # FAILED: aiortc has no ICE restart, and neither has KMS
        current, wanted = ICE_PROGRESS.index(self.ice_state), ICE_PROGRESS.index(target)
        for state in ICE_PROGRESS[current + 1 : wanted + 1]:
            self._set_ice_state(state)

    def _set_ice_state(self, state: str) -> None:
        if state != self.ice_state:
            self.ice_state = state
            self._emit(
                "IceComponentStateChanged",
                streamId=self.stream_id,
                componentId=ICE_COMPONENT,
                state=state,
            )

    def _announce_pair(self) -> None:
        pair = self.ice._connection._nominated.get(ICE_COMPONENT)
        if pair is None:
            return
        self.pair = complex_value(
            "IceCandidatePair",
            streamId=str(self.stream_id),
            componentId=ICE_COMPONENT,
            localCandidate="candidate:"
            + candidate_to_sdp(candidate_from_aioice(pair.local_candidate)),
            remoteCandidate="candidate:"
            + candidate_to_sdp(candidate_from_aioice(pair.remote_candidate)),
        )
        self._emit("NewCandidatePairSelected", candidatePair=self.pair)

    def ice_connection(self) -> dict[str, Any]:
        return complex_value(
            "IceConnection",
            streamId=str(self.stream_id),
            componentId=ICE_COMPONENT,
            state=self.ice_state,
        )

    # -- DTLS -----------------------------------------------------------------------------------

    def _on_dtls_state(self) -> None:
        state = self.dtls.state.upper()  # new, connecting, connected, closed, failed
        if state == self.dtls_state:
            return
        self.dtls_state = state
        for connection in self.dtls_connections():
            self._emit(
                "DtlsConnectionStateChange",
                **{k: v for k, v in connection.items() if not k.startswith("__")},
            )

    def dtls_connections(self) -> list[dict[str, Any]]:
        stream = str(self.stream_id)
        return [
            complex_value(
                "DtlsConnection",
                streamId=stream,
                componentId=f"[{self._component}/{element}]",
                connectionId=f"dtlssrtpenc-dtlssrtpdec-{stream}-{ICE_COMPONENT}",
                state=self.dtls_state,
            )
            for element in DTLS_ELEMENTS
        ]
