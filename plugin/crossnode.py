"""Cross-node reachability: routes (host-gw) or a VXLAN device (vxlan) to every peer's subnet.

STUB — owned by the cross-node work; signatures are the contract cmd_add/cmd_status rely on.
"""
from __future__ import annotations

from typing import List

from plugin.netconf import ClusterNode, NetConf


def find_self(conf: NetConf) -> ClusterNode:
    """This node's entry in conf.nodes (nodeName, CNILAB_NODE_NAME, a local IP, hostname)."""
    raise NotImplementedError


def ensure_peers(conf: NetConf, me: ClusterNode) -> None:
    """Programs the way to every other node's pod subnet; idempotent, locked, no daemon."""
    raise NotImplementedError


def missing_peers(conf: NetConf, me: ClusterNode) -> List[str]:
    """Human-readable problems with the cross-node programming (empty when healthy)."""
    raise NotImplementedError
