"""Which addresses and ports the media server's ICE agents use, and what they announce.

aioice gathers every interface address except 127.0.0.1 and binds random ports. A media server
needs the opposite control (like KMS's networkInterfaces/externalIPv4 or mediasoup's
listenIps/announcedIp): gather exactly the configured addresses, bind inside a UDP port range so
a firewall can be opened for it, and optionally announce another address (the public one behind
1:1 NAT) in the candidates.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from dataclasses import dataclass

import aioice.ice
import aioice.turn
import aiortc.rtcicetransport
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

from .forwarding import FORWARDING

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IcePolicy:
    addresses: tuple[str, ...] = ("127.0.0.1",)
    announced_address: str | None = None
    port_min: int = 0  # 0: any free port
    port_max: int = 0


_policy = IcePolicy()


def use_host_addresses(addresses: tuple[str, ...]) -> None:
    """Make every aioice agent in this process gather exactly these addresses.

    Test peers in the media server's process need the same loopback-only gathering, which is why
    this applies process-wide, while the port range and announced address apply to the server's
    agents only.
    """
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [
        a
        for a in addresses
        if (use_ipv4 and ipaddress.ip_address(a).version == 4)
        or (use_ipv6 and ipaddress.ip_address(a).version == 6)
    ]


def configure(policy: IcePolicy) -> None:
    global _policy
    _policy = policy
    use_host_addresses(policy.addresses)
    aiortc.rtcicetransport.Connection = ServerConnection  # type: ignore[misc]


class ServerConnection(aioice.ice.Connection):
    """aioice's agent, binding inside the port range and announcing the configured address when it
    belongs to the media server (decided when it is created, as the forwarding receivers are)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._server_owned = FORWARDING.get()

    async def get_component_candidates(
        self,
        component: int,
        addresses: list[str],
        timeout: int = 5,  # noqa: ASYNC109 (aioice's signature)
    ) -> list[aioice.ice.Candidate]:
        policy = _policy
        if not self._server_owned or not (policy.port_min or policy.announced_address):
            return await super().get_component_candidates(component, addresses, timeout)
        candidates: list[Candidate] = []
        for address in addresses:
            protocol = await _bind_in_range(self, address, policy)
            if protocol is None:
                continue
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            announced = policy.announced_address or host
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", announced),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=announced,
                port=port,
                type="host",
            )
            self._protocols.append(protocol)
            candidates.append(protocol.local_candidate)
        # STUN and TURN candidates come from aioice itself, with no host addresses of its own.
        candidates += await super().get_component_candidates(component, [], timeout)
        return candidates


async def _bind_in_range(
    connection: aioice.ice.Connection, address: str, policy: IcePolicy
) -> aioice.ice.StunProtocol | None:
    loop = asyncio.get_running_loop()
    ports = [0]
    if policy.port_min:
        ports = list(range(policy.port_min, policy.port_max + 1))
        random.shuffle(ports)
    for port in ports:
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(connection), local_addr=(address, port)
            )
        except OSError:
            continue
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
        return protocol
    logger.error("no free UDP port on %s in %d-%d", address, policy.port_min, policy.port_max)
    return None
