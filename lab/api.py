"""The seams of the harness: what a node, a provider and a scenario cluster look like.

Everything above these protocols (CLI, actions, scenarios) never knows which backend it talks
to: a netns node and a VM over SSH answer the same `Node.run`; the netns lab and a Kubernetes
cluster answer the same `Cluster` calls, so one scenario file runs on both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class LabError(Exception):
    """A failure the CLI reports in one clear message: what failed, where, what to do next."""

    def __init__(self, what: str, *, where: str = "", output: str = "", hint: str = "") -> None:
        self.what, self.where, self.output, self.hint = what, where, output, hint
        super().__init__(self.describe())

    def describe(self) -> str:
        lines = [f"{self.what}" + (f" (on {self.where})" if self.where else "")]
        if self.output.strip():
            lines += ["  " + line for line in self.output.strip().splitlines()[-20:]]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self, where: str = "") -> CommandResult:
        """Returns self, or raises LabError with the command's output when it failed."""
        if self.rc != 0:
            raise LabError(f"command failed (rc={self.rc}): {' '.join(self.argv)}",
                           where=where, output=(self.stderr or self.stdout))
        return self


@runtime_checkable
class Node(Protocol):
    """Something you can run a command on: a netns, a VM over SSH, a bare-metal runner."""

    name: str
    address: str       # underlay / node IP the other nodes reach it on
    state_dir: str     # where this node keeps CNI state (results cache, IPAM data) on its own fs

    def run(self, argv: Sequence[str], *, input: str | bytes | None = None,
            timeout: float = 60,
            env: dict[str, str] | None = None) -> CommandResult: ...

    def put_file(self, local: Path, remote: str, mode: int = 0o755) -> None: ...

    @property
    def testinfra_url(self) -> str:
        """A pytest-testinfra host URL reaching this node (netns://…, paramiko://…)."""
        ...


@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    state: str              # "running", "stopped", "missing", …
    details: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    """Makes and removes nodes. State lives in the resources (names, libvirt metadata)."""

    def provision(self) -> list[Node]:
        """Creates whatever is missing and returns every node; safe to repeat."""
        ...

    def nodes(self) -> list[Node]:
        """The nodes that exist now, found from the resources themselves."""
        ...

    def status(self) -> list[NodeStatus]: ...

    def destroy(self) -> None:
        """Removes everything this lab made, even after a partial provision; nothing else."""
        ...

    def collect_logs(self, dest: Path) -> None:
        """Writes per-node diagnostics under dest/<node>/."""
        ...


@dataclass(frozen=True)
class Attachment:
    """One CNI attachment: what libcni keys its result cache and GC list by."""

    container_id: str
    ifname: str
    node: str
    netns: str = ""


def bridge_port(link_line: str, bridges: Sequence[str]) -> bool:
    """Whether an `ip -o link` line is a port of one of these bridges: how the host side of
    the cluster's own network (flannel's cni0 when the plugin judged is net1) is told apart
    from the plugin's, by the leak audit and by the interfaces a Kubernetes lab lists alike."""
    return any(f" master {bridge} " in link_line for bridge in bridges)


@dataclass(frozen=True)
class AttachOptions:
    """What a runtime passes with one attachment besides the network config (libcni's
    RuntimeConf): CNI_ARGS pairs added to the runtime's own, and capability arguments a plugin
    gets as `runtimeConfig` when its config declares the capability."""

    cni_args: str = ""                  # "IgnoreUnknown=1;IP=10.244.0.50"
    capability_args: dict[str, Any] = field(default_factory=dict)   # portMappings, mac, …
    # CNI_IFNAME of this attachment ("": the network's); a pod that exists gets one more
    ifname: str = ""

    def __bool__(self) -> bool:
        return bool(self.cni_args or self.capability_args or self.ifname)


@runtime_checkable
class Pod(Protocol):
    name: str
    node: str
    ifname: str     # interface of the network under test inside the pod (eth0 / net1)
    ip: str         # its address on that network, without prefix (v4 when it has one)
    ips: dict[int, str]   # family (4, 6) -> its address in that family
    attachment: Attachment

    def exec(self, argv: Sequence[str], *, timeout: float = 30) -> CommandResult: ...


class Cluster(Protocol):
    """What scenarios talk to: pods on nodes attached to the network under test."""

    name: str
    network_name: str
    plugin_type: str      # "cnilab", "ptp", "bridge", …
    mtu: int | None       # the pod MTU the config asks for, if it says
    cni_version: str      # the network config's cniVersion (GC and STATUS exist from 1.1.0)
    ipam_type: str        # the config's IPAM plugin ("host-local": its leases can be read)
    families: tuple[int, ...]   # the pod address families the lab runs: (4,), (6,), (4, 6)

    def nodes(self) -> list[Node]: ...

    def create_pod(self, name: str, node: str, options: AttachOptions | None = None) -> Pod:
        """A pod on node attached to the network; options: netns/VM labs only (a Kubernetes
        cluster refuses them: the kubelet decides what the runtime passes)."""
        ...

    def delete_pod(self, pod: Pod) -> None: ...

    def pods(self) -> list[Pod]: ...

    def cni_check(self, pod: Pod) -> CommandResult:
        """CNI CHECK for the pod's attachment, prevResult taken from the cached ADD result."""
        ...

    def add_result(self, pod: Pod) -> dict[str, Any] | None:
        """The ADD result the runtime cached for the pod (Multus: its delegate's), or None."""
        ...

    def cni_call(self, pod: Pod, command: str) -> CommandResult:
        """ADD, CHECK or DEL of the pod's attachment by hand, as the runtime makes it."""
        ...

    def cni_calls(self, pod: Pod, command: str) -> list[tuple[list[str], str]]:
        """(argv, stdin) of each plugin call that command would make now on the pod's node."""
        ...

    def cni_status(self, node: str) -> CommandResult:
        """CNI STATUS on node (rc 0 with why it was skipped before CNI 1.1.0)."""
        ...

    def add_stray_attachment(self, node: str) -> Attachment:
        """ADDs an attachment on node behind the runtime's back (a leak for GC to find)."""
        ...

    def delete_stray_attachment(self, attachment: Attachment) -> None:
        """DELs what add_stray_attachment made (cleanup whether or not GC removed it)."""
        ...

    def pod_subnet(self, node: str, family: int | None = None) -> str:
        """The CIDR that pods on node get their addresses from (in family, else the primary
        one: v4 when the lab has it)."""
        ...

    def cni_gc(self, node: str) -> CommandResult:
        """CNI GC on node with the attachments the runtime knows as valid."""
        ...

    def host_interfaces(self, node: str) -> list[str]:
        """Names of the host-side interfaces the plugin made on node (for leak audits)."""
        ...

    def ipam_leases(self, node: str) -> dict[str, str]:
        """IP -> container ID of the IPAM leases held on node for this network."""
        ...

    def pod_namespaces(self, node: str) -> list[str]:
        """The network namespaces on node that hold this lab's pods (and strays): what a leak
        audit may judge. Never another lab's or anybody else's namespaces on the host."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class NetworkSpec:
    """The network under test as each node's runtime sees it (rendered from lab.toml)."""

    name: str                       # the config's "name"
    plugin_type: str                # the config's "type": executable looked up on cni_path
    ifname: str                     # interface inside pods: eth0 (netns/VM labs), net1 (Multus)
    cni_path: str                   # CNI_PATH on the node, ':'-separated (plugin dir + IPAM dir)
    configs: dict[str, dict[str, Any]]  # node name -> network config JSON handed on that node
    mtu: int | None = None          # pod MTU the config asks for, if any
    # node name -> CNI_PATH on that node, when it differs per node (netns nodes each keep the
    # plugin under their own state dir); cni_path is then the first node's.
    cni_paths: dict[str, str] = field(default_factory=dict)

    def cni_path_on(self, node: str) -> str:
        return self.cni_paths.get(node, self.cni_path)

    # node name -> family -> the pod subnet the lab gave it (what a config naming none uses)
    pod_subnets: dict[str, dict[int, str]] = field(default_factory=dict)
    families: tuple[int, ...] = (4,)    # the pod address families the lab runs

    @property
    def cni_version(self) -> str:
        first = next(iter(self.configs.values()), {})
        return str(first.get("cniVersion", ""))

    @property
    def ipam_type(self) -> str:
        """The first plugin's IPAM type ("" when it delegates to none)."""
        first = next(iter(self.configs.values()), {})
        plugins = first.get("plugins") if isinstance(first.get("plugins"), list) else [first]
        ipam = (plugins[0] if plugins else {}).get("ipam")
        return str(ipam.get("type", "")) if isinstance(ipam, dict) else ""


@dataclass
class ActionContext:
    """What the `lab up` actions share: config, nodes, where the harness keeps its files."""

    config: Any                     # lab.config.LabConfig
    nodes: list[Node]
    state_dir: Path                 # harness-side files of this lab (keys, kubeconfig, logs)
    report: Any = None              # callable(str) for progress lines; None = silent
    # the nodes run under software emulation (TCG): waits the user did not size take longer
    emulated: bool = False


class Action(Protocol):
    """One idempotent step of `lab up` after provisioning (install plugin, K3s, Multus, …)."""

    name: str

    def run(self, ctx: ActionContext) -> None: ...
