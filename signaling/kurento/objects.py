"""Small typed proxies for the media objects the room media service uses.

A proxy is the object's id and the client that reaches it; it holds no other state, so a proxy
rebuilt from an id stored in the database works as well as the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from signaling.kurento.client import EventCallback, KurentoClient, Subscription


@dataclass(frozen=True)
class MediaObject:
    client: KurentoClient
    id: str

    async def release(self) -> None:
        await self.client.release(self.id)

    async def on(self, event: str, callback: EventCallback) -> Subscription:
        return await self.client.subscribe(self.id, event, callback)

    async def _invoke(self, operation: str, **params: Any) -> Any:
        return await self.client.invoke(self.id, operation, **params)


@dataclass(frozen=True)
class ServerManager(MediaObject):
    id: str = "manager_ServerManager"

    async def get_info(self) -> dict[str, Any]:
        return await self._invoke("getInfo") or {}

    async def get_pipelines(self) -> list[str]:
        """The ids of the server's pipelines (KMS returns ids in place of objects)."""
        return [
            p if isinstance(p, str) else str(p) for p in await self._invoke("getPipelines") or []
        ]


@dataclass(frozen=True)
class MediaElement(MediaObject):
    async def connect(self, sink: MediaElement, media_type: str | None = None) -> None:
        """Send to `sink`: everything, or only `media_type` ("AUDIO", "VIDEO", "DATA")."""
        params = (
            {"sink": sink.id} if media_type is None else {"sink": sink.id, "mediaType": media_type}
        )
        await self._invoke("connect", **params)

    async def disconnect(self, sink: MediaElement, media_type: str | None = None) -> None:
        params = (
            {"sink": sink.id} if media_type is None else {"sink": sink.id, "mediaType": media_type}
        )
        await self._invoke("disconnect", **params)

    async def is_media_flowing_in(self, media_type: str = "VIDEO") -> bool:
        """Whether media reaches this element from the element connected to it (KMS: its sink
        pads). For a viewer's endpoint: the publisher's media arrives."""
        return bool(await self._invoke("isMediaFlowingIn", mediaType=media_type))

    async def is_media_flowing_out(self, media_type: str = "VIDEO") -> bool:
        """Whether this element produces media (KMS: its output). For a WebRtcEndpoint: its
        browser is sending, whether or not anything is connected to it."""
        return bool(await self._invoke("isMediaFlowingOut", mediaType=media_type))


@dataclass(frozen=True)
class WebRtcEndpoint(MediaElement):
    async def process_offer(self, offer: str) -> str:
        return str(await self._invoke("processOffer", offer=offer))

    async def gather_candidates(self) -> None:
        await self._invoke("gatherCandidates")

    async def add_ice_candidate(
        self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        await self._invoke(
            "addIceCandidate",
            candidate={
                "__module__": "kurento",
                "__type__": "IceCandidate",
                "candidate": candidate,
                "sdpMid": sdp_mid or "",
                "sdpMLineIndex": sdp_mline_index or 0,
            },
        )

    async def set_turn_url(self, turn_url: str) -> None:
        await self._invoke("setTurnUrl", turnUrl=turn_url)


@dataclass(frozen=True)
class RecorderEndpoint(MediaElement):
    """Writes what is connected to it to a file on the media server's filesystem."""

    async def record(self) -> None:
        await self._invoke("record")

    async def stop_and_wait(self) -> None:
        """Stop and return once the file is complete."""
        await self._invoke("stopAndWait")


@dataclass(frozen=True)
class PlayerEndpoint(MediaElement):
    """Plays a file (or a stream) from the media server's filesystem or the network into the
    pipeline: it raises EndOfStream at the end."""

    async def play(self) -> None:
        await self._invoke("play")


@dataclass(frozen=True)
class MediaPipeline(MediaObject):
    async def create_webrtc_endpoint(
        self, *, recvonly: bool = False, sendonly: bool = False
    ) -> WebRtcEndpoint:
        params: dict[str, Any] = {"mediaPipeline": self.id}
        if recvonly:
            params["recvonly"] = True
        if sendonly:
            params["sendonly"] = True
        return WebRtcEndpoint(self.client, await self.client.create("WebRtcEndpoint", **params))

    async def create_recorder_endpoint(
        self, *, uri: str, media_profile: str = "WEBM"
    ) -> RecorderEndpoint:
        object_id = await self.client.create(
            "RecorderEndpoint", mediaPipeline=self.id, uri=uri, mediaProfile=media_profile
        )
        return RecorderEndpoint(self.client, object_id)

    async def create_player_endpoint(self, *, uri: str) -> PlayerEndpoint:
        object_id = await self.client.create("PlayerEndpoint", mediaPipeline=self.id, uri=uri)
        return PlayerEndpoint(self.client, object_id)


async def create_pipeline(client: KurentoClient) -> MediaPipeline:
    return MediaPipeline(client, await client.create("MediaPipeline"))
