"""A few "nodes" (network namespaces) on one L2 segment (a bridge in its own namespace).

Used by the cross-node, resident and bench code paths. Everything carries the cnp2- prefix
and a random suffix, and `cluster()` removes every namespace it made even when the body fails.
"""
from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

PREFIX = "cnp2-"
CLONE_NEWNET = 0x40000000
UNDERLAY = ipaddress.IPv4Network("10.123.0.0/24")


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check,
                          timeout=timeout)


def ns_sh(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *args, check=check)


@dataclass
class LabNode:
    name: str        # the CNI node name ("node1")
    ns: str          # its network namespace
    ip: str          # its underlay address
    pod_subnet: str

    def as_conf(self) -> dict[str, str]:
        return {"name": self.name, "ip": self.ip, "podSubnet": self.pod_subnet}


@dataclass
class Lab:
    suffix: str
    segment: str
    nodes: list[LabNode] = field(default_factory=list)
    extra_ns: list[str] = field(default_factory=list)

    def node(self, name: str) -> LabNode:
        return next(n for n in self.nodes if n.name == name)

    def conf(self, backend: str, nodes: Optional[list[LabNode]] = None,
             **extra: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "cniVersion": "1.1.0", "name": f"cnp2net{self.suffix}", "type": "cnilab",
            "backend": backend, "ipam": {"type": "host-local"},
            "nodes": [n.as_conf() for n in (nodes if nodes is not None else self.nodes)],
            "vxlan": {"vni": 4343, "port": 4799, "device": f"cnp2vx{self.suffix}"},
        }
        raw.update(extra)
        return raw

    def new_ns(self, role: str) -> str:
        name = f"{PREFIX}{role}-{self.suffix}"
        sh("ip", "netns", "add", name)
        self.extra_ns.append(name)
        return name


def _add_node(lab: Lab, index: int) -> LabNode:
    ns = f"{PREFIX}n{index}-{lab.suffix}"
    sh("ip", "netns", "add", ns)
    node = LabNode(name=f"node{index}", ns=ns, ip=str(UNDERLAY.network_address + 10 + index),
                   pod_subnet=f"10.124.{index}.0/24")
    lab.nodes.append(node)
    port = f"p{index}{lab.suffix}"[:15]
    sh("ip", "-n", lab.segment, "link", "add", port, "type", "veth", "peer", "name", "eth0",
       "netns", ns)
    sh("ip", "-n", lab.segment, "link", "set", port, "master", "br0", "up")
    sh("ip", "-n", ns, "addr", "add", f"{node.ip}/{UNDERLAY.prefixlen}", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    ns_sh(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    return node


@contextmanager
def cluster(node_count: int = 2) -> Iterator[Lab]:
    lab = Lab(suffix=secrets.token_hex(3), segment="")
    lab.segment = f"{PREFIX}seg-{lab.suffix}"
    try:
        sh("ip", "netns", "add", lab.segment)
        sh("ip", "-n", lab.segment, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", lab.segment, "link", "set", "br0", "up")
        for i in range(1, node_count + 1):
            _add_node(lab, i)
        yield lab
    finally:
        for ns in [*lab.extra_ns, *(n.ns for n in lab.nodes), lab.segment]:
            if ns:
                sh("ip", "netns", "del", ns, check=False)


def run_in_netns(ns: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls fn in a fresh thread that first entered namespace `ns` (only that thread moves)."""
    libc = ctypes.CDLL(None, use_errno=True)
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def ip_json(ns: str, *args: str) -> list[dict[str, Any]]:
    out = sh("ip", "-j", "-n", ns, *args).stdout.strip()
    return json.loads(out) if out else []


def add_endpoint(node: LabNode, host_index: int = 5) -> str:
    """A pod-subnet address on the node's lo: something to ping without the plugin.

    (lo, not a dummy device: this kernel has no dummy module.)
    """
    addr = str(ipaddress.IPv4Network(node.pod_subnet).network_address + host_index)
    sh("ip", "-n", node.ns, "addr", "add", f"{addr}/32", "dev", "lo")
    return addr


def pings(ns: str, src: str, dst: str) -> bool:
    done = ns_sh(ns, "ping", "-c", "1", "-W", "2", "-I", src, dst, check=False)
    return done.returncode == 0
