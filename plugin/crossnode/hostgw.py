"""host-gw: `<peer pod subnet> via <peer node IP>` on every node (flannel's host-gw), for
each pod family: the IPv4 subnet via the peer's IPv4 address, the IPv6 one via its IPv6
address (topology.check_families makes sure each peer has them).

Needs every node on one L2 segment: the kernel refuses a gateway it cannot reach directly,
and we turn that refusal into advice to use vxlan instead.
"""
from __future__ import annotations

from typing import Any

from plugin.crossnode import peer_routes
from plugin.crossnode.topology import ClusterNode


def wanted_routes(peers: list[ClusterNode]) -> list[peer_routes.PeerRoute]:
    return [peer_routes.PeerRoute(dst=str(subnet), gateway=str(p.ip_of(subnet.version)),
                                  node=p.name)
            for p in peers for subnet in p.pod_subnets]


def ensure(ipr: Any, peers: list[ClusterNode]) -> None:
    peer_routes.reconcile(ipr, peer_routes.PROTO_HOST_GW, wanted_routes(peers))


def problems(ipr: Any, peers: list[ClusterNode]) -> list[str]:
    return peer_routes.problems(ipr, peer_routes.PROTO_HOST_GW, wanted_routes(peers))
