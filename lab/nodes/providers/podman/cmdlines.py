"""The podman and `ip` command lines of container nodes, built by pure functions (tested as
strings): the harness's own podman storage, a node's `podman run`, the lab switch and each
node's wiring.

    cnilab-<lab>-<node>          a node: a privileged container, init = catatonit
    cnilab-<lab>-<node>-<vol>    its volumes (K3s state, kubelet, CNI dirs)
    cnilab-<lab>-sw              the lab switch netns: bridge br0, the gateway address, one veth
                                 per node whose peer is the node's eth0 (as netns labs have)
    cl-<lab>                     K3s labs only: the harness's own port on the switch (its
                                 address .2 / ::2), so the harness reaches the K3s API as it
                                 reaches a libvirt lab's; nothing is routed or forwarded

Labels on each container say what it is (lab, node, role, config): the provider finds its
nodes by asking podman, never from a state file.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LABEL_LAB = "cnilab.lab"
LABEL_NODE = "cnilab.node"
LABEL_ROLE = "cnilab.role"
LABEL_CONFIG = "cnilab.config"
NODE_IF = "eth0"
BRIDGE = "br0"
SWITCH = "sw"
RUNROOT = Path("/run/cnilab-podman")    # podman wants its run root short (<= 50 characters)
NODE_STATE_DIR = "/var/lib/cnilab"      # inside each node: its own filesystem
# What K3s and the CNI dirs keep on volumes (a container's own layer is slow for their churn,
# and a volume is what kind and k3d give them): volume suffix -> path in the node.
VOLUMES = {
    "rancher": "/var/lib/rancher/k3s",
    "kubelet": "/var/lib/kubelet",
    "cni": "/var/lib/cni",
    "etccni": "/etc/cni",
    "optcni": "/opt/cni",
}


# containerd's images, snapshots and pods' layers: on tmpfs (RAM, ~300 MiB a node with the pod
# images) unless [podman] containerd_on_disk. On a volume here, deleting them alone took 13 s
# per node at `lab down` (freshly written files on a disk mounted with discard).
CONTAINERD_ROOT = "/var/lib/rancher/k3s/agent/containerd"


def container_name(lab: str, node: str) -> str:
    return f"cnilab-{lab}-{node}"


def volume_name(lab: str, node: str, what: str) -> str:
    return f"cnilab-{lab}-{node}-{what}"


def switch_ns(lab: str) -> str:
    return f"cnilab-{lab}-{SWITCH}"


def switch_port(node: str) -> str:
    """The switch-side veth of a node: readable when it fits IFNAMSIZ, a stable hash otherwise."""
    name = f"v-{node}"
    return name if len(name) <= 15 else "v-" + hashlib.sha1(node.encode()).hexdigest()[:13]


@dataclass(frozen=True)
class Storage:
    """The harness's podman storage: containers, images and volumes under storage_dir, run
    state under /run/cnilab-podman; the host's default podman storage is never read or
    written. runtime and cgroup manager are global options too."""

    root: Path
    runtime: str = "runc"
    cgroup_manager: str = "cgroupfs"

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.root / "storage"), "--runroot", str(RUNROOT),
                "--volumepath", str(self.root / "volumes"), "--tmpdir", str(RUNROOT / "libpod"),
                "--storage-driver", "overlay", "--events-backend", "none",
                "--runtime", self.runtime, "--cgroup-manager", self.cgroup_manager, *args]


@dataclass(frozen=True)
class NodeRun:
    """What one node's `podman run` needs to know."""

    lab: str
    node: str
    role: str
    image: str
    config_path: str = ""
    nofile: int = 1024
    nproc: int = 1024
    modules: bool = False        # /lib/modules exists on the host: mount it read-only
    containerd_tmpfs: bool = True


def run_argv(storage: Storage, spec: NodeRun) -> list[str]:
    """`podman run` of one node, as kind and k3d make theirs: privileged (K3s programs
    iptables, mounts, makes namespaces and devices), no podman network (the lab wires its own
    eth0), tmpfs /run and /tmp, its own cgroup namespace (kubelet then makes its pod cgroups
    under the node's, not at the host's root, where nodes would fight over them), K3s's and
    the CNI dirs on volumes, rlimits this host's root can grant."""
    labels = {LABEL_LAB: spec.lab, LABEL_NODE: spec.node, LABEL_ROLE: spec.role,
              LABEL_CONFIG: spec.config_path}
    argv = ["run", "--detach", "--name", container_name(spec.lab, spec.node),
            "--hostname", spec.node, "--privileged", "--network", "none",
            "--cgroupns", "private", "--pull", "never", "--pids-limit", "-1",
            "--tmpfs", "/run:rw,exec,nosuid,mode=0755", "--tmpfs", "/tmp:rw,exec,mode=1777",
            "--ulimit", f"nofile={spec.nofile}:{spec.nofile}",
            "--ulimit", f"nproc={spec.nproc}:{spec.nproc}"]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    for what, path in VOLUMES.items():
        argv += ["--volume", f"{volume_name(spec.lab, spec.node, what)}:{path}"]
    if spec.containerd_tmpfs:    # inside the rancher volume: podman mounts it after it
        argv += ["--tmpfs", f"{CONTAINERD_ROOT}:rw,exec,mode=0700"]
    if spec.modules:
        argv += ["--volume", "/lib/modules:/lib/modules:ro"]
    return storage.argv(*argv, spec.image)


def list_argv(storage: Storage, lab: str) -> list[str]:
    """Every container of the lab, running or not, as JSON."""
    return storage.argv("ps", "--all", "--format", "json", "--filter", f"label={LABEL_LAB}={lab}")


def inspect_argv(storage: Storage, names: Sequence[str]) -> list[str]:
    return storage.argv("inspect", "--type", "container", "--format", "json", *names)


def remove_argv(storage: Storage, names: Sequence[str]) -> list[str]:
    """Stops (no grace: nodes hold nothing to save) and removes containers with their
    anonymous volumes."""
    return storage.argv("rm", "--force", "--volumes", "--time", "0", *names)


def volumes_argv(storage: Storage, lab: str) -> list[str]:
    return storage.argv("volume", "ls", "--format", "{{.Name}}",
                        "--filter", f"name=^cnilab-{lab}-")


def volume_rm_argv(storage: Storage, names: Sequence[str]) -> list[str]:
    return storage.argv("volume", "rm", "--force", *names)


HOST_PORT = "h-host"     # the switch side of the harness's port


def host_link(lab: str) -> str:
    """The harness's port on the host (IFNAMSIZ: a hash when `cl-<lab>` does not fit)."""
    name = f"cl-{lab}"
    return name if len(name) <= 15 else "cl-" + hashlib.sha1(lab.encode()).hexdigest()[:12]


def host_address(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The harness's address on each family: the second host (the switch has the first)."""
    return str(net.network_address + 2)


def host_link_batch(lab: str, exists: bool, addresses: dict[int, str]) -> list[str]:
    """`ip -batch` lines on the host: the harness's port (its peer made in the switch netns)
    with its address per family. No route but the connected one, no forwarding: the nodes
    reach the harness on the lab subnet and nothing beyond it."""
    link = host_link(lab)
    cmds = [] if exists else [f"link add {link} type veth peer name {HOST_PORT} "
                              f"netns {switch_ns(lab)}"]
    for address in addresses.values():
        cmds.append(f"addr replace {address} dev {link}" + (" nodad" if ":" in address else ""))
    return [*cmds, f"link set {link} up"]


def gateway(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The switch's address on each family: the first host. Nodes route by default to it
    (K3s, flannel and kube-proxy expect a default route); it forwards nothing, so nothing
    leaves the lab."""
    return str(net.network_address + 1)


def switch_batch(ports: dict[str, int | None], existing: set[str],
                 gateways: dict[int, str]) -> list[str]:
    """`ip -batch` lines in the switch netns: the bridge with the gateway addresses, and a
    veth per node (port -> container PID, None when its eth0 is there already) whose peer is
    made straight in the node's namespace as eth0. A stale port of the same name must be gone
    first (stale_ports)."""
    cmds = [] if BRIDGE in existing else [f"link add {BRIDGE} type bridge"]
    cmds += ["link set lo up", f"link set {BRIDGE} up"]
    for address in gateways.values():
        cmds.append(f"addr replace {address} dev {BRIDGE}" + (" nodad" if ":" in address else ""))
    for port, pid in ports.items():
        if pid is not None:
            cmds.append(f"link add {port} type veth peer name {NODE_IF} netns {pid}")
        cmds.append(f"link set {port} master {BRIDGE} up")
    return cmds


def stale_ports(ports: dict[str, int | None], existing: set[str]) -> list[str]:
    """`ip -batch` lines removing switch ports about to be made again (their node is new: the
    kernel removes a gone namespace's veths asynchronously, so one may still be listed)."""
    return [f"link del {port}" for port, pid in ports.items() if pid is not None
            and port in existing]


def node_batch(addresses: dict[int, str], gateways: dict[int, str]) -> list[str]:
    """`ip -batch` lines in a node's namespace: lo, eth0's address per family (v6 without
    DAD: the lab chose it), eth0 up, a default route per family via the switch."""
    cmds = ["link set lo up"]
    for version, address in addresses.items():
        cmds.append(f"addr replace {address} dev {NODE_IF}" + (" nodad" if version == 6 else ""))
    cmds.append(f"link set {NODE_IF} up")
    for via in gateways.values():     # the family follows from the address
        cmds.append(f"route replace default via {via} dev {NODE_IF}")
    return cmds
