"""Cross-node reachability: routes (host-gw) or a VXLAN device (vxlan) to every peer's pod
subnets, IPv4, IPv6 or both.

No daemon: every ADD reconciles this node's routes (and tunnel entries) with the node list in
the config it was given, under a per-node lock, and changes only what differs. STATUS and
CHECK use missing_peers to report what is not as the config says.

This package knows nothing of CNI: it takes a Topology, raises CrossNodeError (Misconfigured,
Busy, ProgrammingFailed), and the CNI plugin (plugin.cni) maps those to its error codes.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from plugin.crossnode import hostgw, localaddr, locking, quiet_platform, vxlan
from plugin.crossnode.errors import CrossNodeError, Misconfigured, ProgrammingFailed
from plugin.crossnode.topology import ClusterNode, Topology

NODE_NAME_ENV = "CNILAB_NODE_NAME"

__all__ = ["NODE_NAME_ENV", "ClusterNode", "CrossNodeError", "Topology", "ensure_peers",
           "find_self", "lock_name", "missing_peers", "peers_of"]


def find_self(topology: Topology) -> ClusterNode:
    """This node's entry: nodeName, CNILAB_NODE_NAME, else by its IP and hostname."""
    if not topology.nodes:
        raise Misconfigured("nodes", "empty", "list every node with name, ip and podSubnet")
    by_name = {n.name: n for n in topology.nodes}
    known = ", ".join(by_name)
    for source, name in (("nodeName", topology.node_name),
                         (NODE_NAME_ENV, os.environ.get(NODE_NAME_ENV))):
        if name:
            if name in by_name:
                return by_name[name]
            raise Misconfigured(source, f"{name!r} is not in nodes", f"known nodes: {known}")
    hostname = socket.gethostname()
    named = [by_name[c] for c in (hostname, hostname.split(".")[0]) if c in by_name]
    with _ipr() as ipr:
        # The usual case (K3s names a node after its host) costs one lookup, not an address
        # dump that grows with the pods on this node.
        for node in named:
            if any(localaddr.interface_holding(ipr, ip) is not None for ip in node.ips):
                return node
        local = localaddr.local_addresses(ipr)
    for node in topology.nodes:
        if any(ip in local for ip in node.ips):
            return node
    if named:
        return named[0]
    raise Misconfigured("nodes", "this node is not listed",
                        f"no node name given, none of {known} has an IP of this host, and the "
                        f"hostname {hostname!r} is not a node name; set nodeName or "
                        f"{NODE_NAME_ENV}")


@contextmanager
def _ipr() -> Iterator[Any]:
    IPRoute = quiet_platform.iproute_class()  # lazy: VERSION and config errors skip it
    try:
        # strict: the kernel (>= 4.20) filters dumps by the header's fields (see peer_routes)
        ipr = IPRoute(strict_check=True)  # the calling thread's namespace: the node's
    except Exception:  # an older kernel refuses NETLINK_GET_STRICT_CHK: filter ourselves
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def peers_of(topology: Topology, me: ClusterNode) -> list[ClusterNode]:
    return [n for n in topology.nodes if n.name != me.name]


def lock_name(topology: Topology, me: ClusterNode) -> str:
    """Per network and node, and per network namespace the node's routes live in: the nodes
    of a netns lab share one /run but not their routes, and two labs made from one config
    (same network, same `node1`) are two namespaces, so they never wait on each other."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_"
                   for c in f"{topology.network}-{me.name}")
    return f"crossnode-{safe}-{_netns_id()}"


def forget_locks(lock_dir: str) -> int:
    """Removes this network namespace's lock files (every network's) from lock_dir; the count.
    Only for a node that goes away (`lab down`): its namespace's inode is named in them, so no
    later namespace asks for them again, and the netns labs of one host share one run dir."""
    suffix = f"-{_netns_id()}.lock"
    removed = 0
    for name in os.listdir(lock_dir):
        if name.startswith("crossnode-") and name.endswith(suffix):
            try:
                os.unlink(os.path.join(lock_dir, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _netns_id() -> str:
    """The inode of this thread's network namespace (a resident worker enters the caller's)."""
    for path in ("/proc/thread-self/ns/net", "/proc/self/ns/net"):
        try:
            return str(os.stat(path).st_ino)
        except OSError:
            continue
    return "0"


def ensure_peers(topology: Topology, me: ClusterNode, lock_dir: str,
                 lock_timeout: float = locking.DEFAULT_TIMEOUT) -> None:
    """Programs the way to every other node's pod subnet; idempotent, locked, no daemon.

    `lock_dir` holds the node's lock file (the plugin's run directory, already checked);
    Busy when another call holds it longer than `lock_timeout` seconds.
    """
    if topology.backend not in ("host-gw", "vxlan"):
        return
    from pyroute2.netlink.exceptions import NetlinkError

    peers = peers_of(topology, me)

    def reconcile(ipr: Any) -> None:
        if topology.backend == "host-gw":
            hostgw.ensure(ipr, peers)
        else:
            vxlan.ensure(ipr, topology.vxlan, topology.underlay_family, me, peers)

    try:
        with _ipr() as ipr:
            # Nearly every ADD finds everything in place: find that out without the lock,
            # so parallel ADDs on a node do not queue behind each other's reads.
            try:
                reconcile(_ReadOnly(ipr))
                return
            except _WouldChange:
                pass
            with locking.exclusive(lock_dir, lock_name(topology, me), lock_timeout):
                reconcile(ipr)
    except NetlinkError as e:
        raise ProgrammingFailed(f"{topology.backend}: programming the way to other nodes "
                                f"failed: {os.strerror(e.code)}", str(e)) from None


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
            return found  # get_addr, nlm_request (dumps only: localaddr.addresses_on)

        def guarded(command: str, *args: Any, **kwargs: Any) -> Any:
            if command not in self._READS:
                raise _WouldChange(f"{name} {command}")
            return found(command, *args, **kwargs)

        return guarded


def missing_peers(topology: Topology, me: ClusterNode) -> list[str]:
    """Human-readable problems with the cross-node programming (empty when healthy)."""
    if topology.backend not in ("host-gw", "vxlan"):
        return []
    peers = peers_of(topology, me)
    with _ipr() as ipr:
        if topology.backend == "host-gw":
            return hostgw.problems(ipr, peers)
        return vxlan.problems(ipr, topology.vxlan, topology.underlay_family, me, peers)
