"""Cross-node reachability: routes (host-gw) or a VXLAN device (vxlan) to every peer's subnet.

No daemon: every ADD reconciles this node's routes (and tunnel entries) with the node list in
the config it was given, under a per-namespace lock, and changes only what differs. STATUS
uses missing_peers to report what is not as the config says (code 51).
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from plugin import hostgw, localaddr, locking, vxlan
from plugin.errors import CROSS_NODE_FAILURE, INVALID_CONFIG, CniError
from plugin.netconf import ClusterNode, NetConf

NODE_NAME_ENV = "CNILAB_NODE_NAME"


def find_self(conf: NetConf) -> ClusterNode:
    """This node's entry in conf.nodes: nodeName, CNILAB_NODE_NAME, else by its IP and hostname."""
    if not conf.nodes:
        raise CniError(INVALID_CONFIG, "invalid network config: nodes: empty",
                       "list every node with name, ip and podSubnet")
    by_name = {n.name: n for n in conf.nodes}
    known = ", ".join(by_name)
    for source, name in (("nodeName", conf.node_name), (NODE_NAME_ENV,
                                                         os.environ.get(NODE_NAME_ENV))):
        if name:
            if name in by_name:
                return by_name[name]
            raise CniError(INVALID_CONFIG,
                           f"invalid network config: {source} {name!r} is not in nodes",
                           f"known nodes: {known}")
    hostname = socket.gethostname()
    named = [by_name[c] for c in (hostname, hostname.split(".")[0]) if c in by_name]
    with _ipr() as ipr:
        # The usual case (K3s names a node after its host) costs one lookup, not an address
        # dump that grows with the pods on this node.
        for node in named:
            if localaddr.interface_holding(ipr, node.ip) is not None:
                return node
        local = localaddr.local_addresses(ipr)
    for node in conf.nodes:
        if node.ip in local:
            return node
    if named:
        return named[0]
    raise CniError(INVALID_CONFIG,
                   "invalid network config: nodes: this node is not listed",
                   f"no node name given, none of {known} has an IP of this host, and the "
                   f"hostname {hostname!r} is not a node name; set nodeName or {NODE_NAME_ENV}")


@contextmanager
def _ipr() -> Iterator[Any]:
    from pyroute2.iproute.linux import IPRoute  # lazy: the per-call entry stays stdlib-only

    try:
        # strict: the kernel (>= 4.20) filters dumps by the header's fields (see peer_routes)
        ipr = IPRoute(strict_check=True)  # the calling thread's namespace: the node's
    except Exception:  # an older kernel refuses NETLINK_GET_STRICT_CHK: filter ourselves
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def peers_of(conf: NetConf, me: ClusterNode) -> list[ClusterNode]:
    return [n for n in conf.nodes if n.name != me.name]


def _lock_name(me: ClusterNode) -> str:
    # Per node, not per host: the nodes of a netns lab share one /run but not their routes.
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in me.name)
    return f"crossnode-{safe}"


def ensure_peers(conf: NetConf, me: ClusterNode) -> None:
    """Programs the way to every other node's pod subnet; idempotent, locked, no daemon."""
    if conf.backend not in ("host-gw", "vxlan"):
        return
    from pyroute2.netlink.exceptions import NetlinkError

    peers = peers_of(conf, me)

    def reconcile(ipr: Any) -> None:
        if conf.backend == "host-gw":
            hostgw.ensure(ipr, peers)
        else:
            vxlan.ensure(ipr, conf.vxlan, me, peers)

    try:
        with _ipr() as ipr:
            # Nearly every ADD finds everything in place: find that out without the lock,
            # so parallel ADDs on a node do not queue behind each other's reads.
            try:
                reconcile(_ReadOnly(ipr))
                return
            except _WouldChange:
                pass
            with locking.exclusive(_lock_name(me)):
                reconcile(ipr)
    except NetlinkError as e:
        raise CniError(CROSS_NODE_FAILURE,
                       f"{conf.backend}: programming the way to other nodes failed: "
                       f"{os.strerror(e.code)}", str(e)) from None


class _WouldChange(Exception):
    pass


class _ReadOnly:
    """An IPRoute that answers reads and raises _WouldChange at the first write."""

    _READS = ("get", "dump")

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._ipr, name)
        if name not in ("link", "addr", "route", "neigh", "fdb"):
            return found  # get_addr, nlm_request (dumps only: wiring.addresses_on)

        def guarded(command: str, *args: Any, **kwargs: Any) -> Any:
            if command not in self._READS:
                raise _WouldChange(f"{name} {command}")
            return found(command, *args, **kwargs)

        return guarded


def missing_peers(conf: NetConf, me: ClusterNode) -> list[str]:
    """Human-readable problems with the cross-node programming (empty when healthy)."""
    if conf.backend not in ("host-gw", "vxlan"):
        return []
    peers = peers_of(conf, me)
    with _ipr() as ipr:
        if conf.backend == "host-gw":
            return hostgw.problems(ipr, peers)
        return vxlan.problems(ipr, conf.vxlan, me, peers)
