"""The Kubernetes driver of the scenario Cluster: real pods on K3s, the plugin attached by Multus
(net1) or as the cluster network (eth0); the same scenario files as on the netns lab.

Pods are pinned with nodeName and carry the k8s.v1.cni.cncf.io/networks annotation; exec goes
through the API (kubernetes client, websocket stream), or with `k3s.probe_exec = "netns"` into
the pod's network namespace from its node (`ip netns exec`, over SSH); the test interface's IP
is read from the network-status annotation Multus writes (primary mode: status.podIP). What the
runtime did on a node is read there over Node.run: libcni's result cache gives the pod's
container ID, netns and ADD result, so CHECK and GC run the plugin by hand exactly as the
runtime would.

The API boundary is `KubeApi` (lab.kube.kubeapi, the only importer of kubernetes); everything around
it is plain functions, unit-tested without a cluster.

Longer than 400 lines: the pure functions above KubeCluster parse what only it reads (pods,
events, libcni's cache) and are tested one by one; they sit beside their one user.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lab.api import (
    Attachment,
    AttachOptions,
    CommandResult,
    LabError,
    NetworkSpec,
    Node,
    bridge_port,
)
from lab.config.k3s import K3sSettings
from lab.kube import cmdlines, kubeconfig, multus_install, nad, remote
from lab.kube.airgap import pod_image_of
from lab.kube.kubeapi import MANAGED_BY, KubeApi
from lab.runtime.cni_runtime import CachedAttachment, CniCallError, CniRuntime

LAB_LABEL = "cnilab.dev/lab"
# libcni's cache: containerd (primary network) writes the first, Multus's delegates the second.
LIBCNI_RESULTS_DIRS = ("/var/lib/cni/results", "/var/lib/cni/multus/results")
POLL = 1.0


# --- pure parts ---------------------------------------------------------------------------------

def pod_manifest(name: str, node: str, *, lab: str, settings: K3sSettings,
                 spec: NetworkSpec, image: str, pull_policy: str) -> dict[str, Any]:
    """A pod pinned to node, asking Multus for the network under test (unless it is primary)."""
    annotations = {} if settings.primary else {
        nad.NETWORKS_ANNOTATION: nad.networks_annotation(spec, settings.namespace)}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": settings.namespace,
                     "labels": {LAB_LABEL: lab, **MANAGED_BY}, "annotations": annotations},
        "spec": {
            "nodeName": node,   # no scheduler in the way: the scenario said which node
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "pod", "image": image, "imagePullPolicy": pull_policy,
                # PID 1 ignores SIGTERM unless it traps it: a bare `sleep` made every delete
                # wait out the grace period before the kubelet's SIGKILL.
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"],
                # Scenarios tamper with the pod's address and routes (CHECK must notice).
                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
            }],
        },
    }


def pod_ips_from(pod: dict[str, Any], spec: NetworkSpec,
                 settings: K3sSettings) -> dict[int, str]:
    """family -> the address of the interface under test: network-status (Multus) or
    status.podIPs (primary)."""
    if settings.primary:
        status = pod.get("status") or {}
        listed = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
        return nad.by_family([ip for ip in listed or [status.get("podIP")] if ip])
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return nad.attachment_ips(annotations.get(nad.NETWORK_STATUS_ANNOTATION), spec,
                              settings.namespace)


def pod_ip_from(pod: dict[str, Any], spec: NetworkSpec, settings: K3sSettings) -> str | None:
    """The primary address (v4 when the pod has one) of the interface under test."""
    return next(iter(pod_ips_from(pod, spec, settings).values()), None)


def pod_phase_problem(pod: dict[str, Any]) -> str:
    """Why a pod is not running yet, in words (image pull, sandbox/CNI errors…)."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return f"{waiting.get('reason', '')}: {waiting.get('message', '')}".strip(": ")
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True" and cond.get("message"):
            return f"{cond.get('type')}: {cond['message']}"
    return str(status.get("phase", "Pending"))


# Waiting reasons that no amount of waiting fixes: fail at once with the message.
FATAL_WAITING = ("ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError", "CrashLoopBackOff", "RunContainerError")
# Warning events that repeat while the kubelet retries in vain (the CNI plugin's error is in
# FailedCreatePodSandBox's message): twice is a pattern, not a hiccup.
FATAL_EVENTS = ("FailedCreatePodSandBox", "FailedCreatePodContainer", "Failed",
                "ErrImageNeverPull")
FATAL_EVENT_REPEATS = 2


def pod_failure(pod: dict[str, Any], events: Sequence[dict[str, Any]]) -> str | None:
    """Why a pod will never run, from its status and its Warning events; None while it may."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING:
            return f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
    seen: dict[str, int] = {}
    for event in events:
        if event.get("type") != "Warning" or event.get("reason") not in FATAL_EVENTS:
            continue
        # newer kubelets repeat an event as new objects or as a series, not only as `count`
        reason = event["reason"]
        seen[reason] = seen.get(reason, 0) + event_count(event)
        if seen[reason] >= FATAL_EVENT_REPEATS:
            return f"{reason} (x{seen[reason]}): {event.get('message', '')}"
    return None


def own_events(events: Sequence[dict[str, Any]], pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of this pod, not of an earlier pod of the same name (a scenario that reuses
    a name after a failed run would otherwise read that one's failures as its own)."""
    uid = (pod.get("metadata") or {}).get("uid")
    if not uid:
        return list(events)
    return [e for e in events if (e.get("involvedObject") or {}).get("uid") in (None, uid)]


def event_count(event: dict[str, Any]) -> int:
    """How often an event happened: core/v1's count, else events.k8s.io's series.count."""
    series = event.get("series") or {}
    try:
        return int(event.get("count") or series.get("count") or 1)
    except (TypeError, ValueError):
        return 1


def events_text(events: Sequence[dict[str, Any]], limit: int = 8) -> str:
    """The pod's recent events, one line each, as `kubectl describe` lists them."""
    lines = [f"{e.get('type', '')} {e.get('reason', '')} (x{e.get('count') or 1}): "
             f"{(e.get('message') or '').strip()}" for e in events[-limit:]]
    return "\n".join(lines)


def cni_args_text(args: Any) -> str:
    """libcni caches CNI_ARGS as [[key, value], ...]; plugins get them as K=V;K=V."""
    if isinstance(args, list):
        return ";".join(f"{k}={v}" for k, v in (pair for pair in args if len(pair) == 2))
    return str(args or "")


def parse_libcni_cache(text: str) -> CachedAttachment | None:
    """One libcni result cache file (cniCacheV1), or None for anything else."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("kind") != "cniCacheV1":
        return None
    return CachedAttachment(
        container_id=str(doc.get("containerId", "")), ifname=str(doc.get("ifName", "")),
        network=str(doc.get("networkName", "")), netns=str(doc.get("netns", "")),
        cni_args=cni_args_text(doc.get("cniArgs")), result=doc.get("result") or {})


def pod_of(entry: CachedAttachment) -> tuple[str, str]:
    """(namespace, name) of the pod an attachment belongs to, from its CNI_ARGS."""
    args = dict(part.split("=", 1) for part in entry.cni_args.split(";") if "=" in part)
    return args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")


def find_pod_attachment(entries: Sequence[CachedAttachment], namespace: str, pod: str,
                        network: str, ifname: str) -> CachedAttachment | None:
    matches = [e for e in entries if e.network == network and e.ifname == ifname
               and pod_of(e) == (namespace, pod)]
    return matches[-1] if matches else None


def valid_attachments(entries: Sequence[CachedAttachment], live_pods: set[tuple[str, str]],
                      node: str) -> list[Attachment]:
    """What the runtime still knows as attached on node: cache entries of pods that exist."""
    return [e.attachment(node) for e in entries if pod_of(e) in live_pods]


def netns_from_inspectp(text: str) -> str:
    """The network namespace path in `crictl inspectp -o json` (for caches without netns)."""
    try:
        info = json.loads(text).get("info", {})
    except (ValueError, AttributeError):
        return ""
    for ns in ((info.get("runtimeSpec") or {}).get("linux") or {}).get("namespaces") or []:
        if ns.get("type") == "network" and ns.get("path"):
            return str(ns["path"])
    return ""


def sandbox_netns(node: Node, sandbox_id: str) -> str:
    """The netns path the runtime gave a pod sandbox (`k3s crictl inspectp`), or ""."""
    res = node.run([cmdlines.K3S_BIN, "crictl", "inspectp", "-o", "json", sandbox_id],
                   timeout=120)
    return netns_from_inspectp(res.stdout) if res.ok else ""


def pod_netns_lookup(ip: str) -> str:
    """A node-side sh line printing the name of the runtime's network namespace (CRI names them
    cni-*) that holds ip: found by address, since older libcni caches do not record the
    netns and asking the runtime (`k3s crictl`) takes 10 s and more under TCG."""
    shown = ipaddress.ip_address(ip)   # as `ip` prints it (fd00:0208::5 is fd00:208::5)
    return ('for n in $(ip netns list | cut -d" " -f1); do case "$n" in cni-*) '
            f'ip -n "$n" -o addr show | grep -qF " {shown}/" && {{ echo "$n"; exit 0; }};; '
            'esac; done; exit 1')


def netns_name_of(path: str) -> str:
    """`ip netns` name of a namespace path the runtime recorded (/var/run/netns/cni-…), or ""."""
    head, _, name = path.rstrip("/").rpartition("/")
    return name if head in ("/run/netns", "/var/run/netns") else ""


def teardown_check(container_id: str, netns: str, results_dirs: Sequence[str]) -> str:
    """A node-side sh line printing what is left of a sandbox (its libcni cache entries, its
    netns); prints nothing once the runtime's DEL and netns removal are done."""
    patterns = " ".join(f"{shlex.quote(d)}/*-{shlex.quote(container_id)}-*" for d in results_dirs)
    line = f'for f in {patterns}; do [ -e "$f" ] && echo "$f"; done'
    if netns:
        line += f"; [ -e {shlex.quote(netns)} ] && echo {shlex.quote(netns)}"
    return line + "; true"


# --- node side: libcni's cache and the plugin, over Node.run ---------------------------------

class LibcniRuntime(CniRuntime):
    """CniRuntime reading the cache the real runtime (containerd/Multus via libcni) wrote."""

    def __init__(self, node: Node, spec: NetworkSpec, results_dir: str) -> None:
        super().__init__(node, spec)
        self.results_dir = results_dir

    @staticmethod
    def _parse_cache(text: str) -> CachedAttachment | None:
        return parse_libcni_cache(text)

    def cached(self, container_id: str, ifname: str | None = None) -> CachedAttachment | None:
        entry = super().cached(container_id, ifname)
        if entry is not None and not entry.netns:
            entry = replace(entry, netns=sandbox_netns(self.node, container_id))
        return entry


# --- the Cluster --------------------------------------------------------------------------------

@dataclass(frozen=True)
class KubePod:
    name: str
    node: str
    ifname: str
    ip: str
    attachment: Attachment
    namespace: str
    image: str
    api: KubeApi = field(repr=False, compare=False)
    ips: dict[int, str] = field(default_factory=dict)
    # probe_exec = "netns": the node holding the pod and the name of the pod's netns there
    host: Node | None = field(default=None, repr=False, compare=False)
    netns_name: str = ""

    def exec(self, argv: Sequence[str], *, timeout: float = 30) -> CommandResult:
        # A missing command is said as such, with where it was looked for, not just as a
        # failed exec: `ip netns exec` says so with exit 1, a shell and the API with 127.
        if self.host is not None:
            res = self.host.run(["ip", "netns", "exec", self.netns_name, *argv], timeout=timeout)
            missing = res.rc == 127 or (res.rc == 1 and f'exec of "{argv[0]}" failed' in res.stderr)
            where = f"on node {self.node} (probes run in pod {self.name}'s netns there)"
        else:
            res = self.api.exec(self.namespace, self.name, argv, timeout)
            missing = res.rc == 127
            where = f"in pod image {self.image} (pod {self.name})"
        if missing:
            return CommandResult(res.argv, 127, res.stdout,
                                 f"{argv[0]}: not found {where}\n{res.stderr}")
        return res


class KubeCluster:
    """api.Cluster on a K3s lab (lab.cluster.session builds it when the config has [k3s])."""

    def __init__(self, lab: Any, api: KubeApi | None = None) -> None:
        from lab.api import ActionContext

        config = lab.config
        self.settings: K3sSettings = config.k3s
        self.name = config.name
        self._nodes: list[Node] = lab.nodes()
        ctx = ActionContext(config=config, nodes=self._nodes, state_dir=config.harness_dir)
        self.dirs = multus_install.cluster_cni_dirs(ctx)
        self.spec = multus_install.kube_network_spec(config, self._nodes, self.dirs)
        self.network_name, self.plugin_type, self.mtu = (
            self.spec.name, self.spec.plugin_type, self.spec.mtu)
        self.cni_version, self.ipam_type = self.spec.cni_version, self.spec.ipam_type
        self.families = self.spec.families
        path = self.kubeconfig_path = kubeconfig.state_path(config.harness_dir)
        if api is None and not path.exists():
            raise LabError(f"no kubeconfig for lab {self.name} at {path}",
                           hint="run `lab up` (it fetches it) or `lab kubeconfig`")
        self.api = api or KubeApi(path)
        self.pod_image, self.pod_image_pull_policy = pod_image_of(config)
        self.namespace = self.settings.namespace
        self.api.ensure_namespace(self.namespace)
        # Stray attachments live in namespaces the harness makes on the node, cached in the
        # node's own state dir, the way the netns driver does it.
        from lab.drivers.podns import NamespacePodCluster
        self._strays = NamespacePodCluster(self.name, self._nodes, self.spec)

    # -- pods ------------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        return list(self._nodes)

    def _node(self, name: str) -> Node:
        for node in self._nodes:
            if node.name == name:
                return node
        raise LabError(f"no node {name!r} in lab {self.name}",
                       hint=f"nodes: {', '.join(n.name for n in self._nodes)}")

    def create_pod(self, name: str, node: str,
                   options: AttachOptions | None = None) -> KubePod:
        if options:
            raise LabError("CNI_ARGS, capability arguments and interface names are the "
                           "runtime's on a K3s lab (the kubelet and Multus decide what reaches "
                           "the plugin)",
                           hint="use them on a netns or VM lab, where `lab` is the runtime")
        self._node(node)
        self.api.create_pod(pod_manifest(
            name, node, lab=self.name, settings=self.settings, spec=self.spec,
            image=self.pod_image, pull_policy=self.pod_image_pull_policy))
        deadline = time.monotonic() + self.settings.ready_timeout
        problem = "not created"
        while True:
            pod = self.api.read_pod(self.namespace, name)
            if pod is not None:
                phase = (pod.get("status") or {}).get("phase")
                ip = pod_ip_from(pod, self.spec, self.settings)
                if phase == "Running" and ip:
                    return self._pod(pod, ip)
                problem = pod_phase_problem(pod) if phase != "Running" else \
                    f"running, but no {self.spec.ifname} address in network-status"
                events = own_events(self.api.pod_events(self.namespace, name), pod)
                fatal = pod_failure(pod, events)
                if fatal is not None or time.monotonic() >= deadline:
                    self._discard(name)
                    raise LabError(
                        f"pod {self.namespace}/{name} on {node} "
                        + ("will not start" if fatal else
                           f"not running within {self.settings.ready_timeout:.0f}s")
                        + f": {fatal or problem}",
                        where=node, output=events_text(events),
                        hint=f"kubectl --kubeconfig {self.kubeconfig_path} "
                             f"-n {self.namespace} describe pod {name}")
            elif time.monotonic() >= deadline:
                raise LabError(f"pod {self.namespace}/{name} was never created", where=node)
            time.sleep(POLL)

    def _discard(self, name: str) -> None:
        """A pod that failed to start is deleted: a retried scenario must not trip on it."""
        with contextlib.suppress(Exception):   # the original failure is what the user sees
            self.discard_pod(name)

    def discard_pod(self, name: str) -> None:
        """Asks for the pod's deletion and returns at once (Ctrl-C: no teardown is awaited;
        the kubelet still runs the CNI DEL)."""
        self.api.delete_pod(self.namespace, name)

    def _pod(self, pod: dict[str, Any], ip: str) -> KubePod:
        meta, node = pod["metadata"], pod["spec"]["nodeName"]
        entry = self._attachment_entry(node, meta["name"])
        attachment = entry.attachment(node) if entry else Attachment("", self.spec.ifname, node)
        image = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("image", "")
        host, netns = None, ""
        if self.settings.probe_exec == "netns":
            host = self._node(node)
            netns = (netns_name_of(attachment.netns)
                     or self._netns_holding(host, meta["name"], ip, attachment.container_id))
        return KubePod(name=meta["name"], node=node, ifname=self.spec.ifname, ip=ip,
                       attachment=attachment, namespace=self.namespace, image=image,
                       api=self.api, ips=pod_ips_from(pod, self.spec, self.settings),
                       host=host, netns_name=netns)

    @staticmethod
    def _netns_holding(host: Node, pod: str, ip: str, sandbox: str) -> str:
        """The pod's netns, found by its address (fast), else by asking the runtime about its
        sandbox (the address may be gone: a pod tampered with to see CHECK fail)."""
        found = host.run(["sh", "-c", pod_netns_lookup(ip)], timeout=60)
        if found.ok and found.stdout.strip():
            return found.stdout.strip()
        name = netns_name_of(sandbox_netns(host, sandbox)) if sandbox else ""
        if name:
            return name
        raise LabError(f"no network namespace on {host.name} holds pod {pod}'s address {ip}",
                       where=host.name, output=found.stderr,
                       hint='probe_exec = "netns" needs the runtime\'s namespaces under '
                            '/run/netns (containerd\'s CRI puts them there); or set '
                            'k3s.probe_exec = "pod"')

    def delete_pod(self, pod: Any) -> None:
        """Deletes the pod and returns once the runtime's DEL has finished on its node: the
        API object goes first, the kubelet's sandbox teardown (CNI DEL, netns removal) after,
        and scenarios judge the node right after this returns."""
        self.api.delete_pod(self.namespace, pod.name)
        deadline = time.monotonic() + self.settings.ready_timeout
        while self.api.read_pod(self.namespace, pod.name) is not None:
            if time.monotonic() >= deadline:
                raise LabError(f"pod {self.namespace}/{pod.name} still exists after "
                               f"{self.settings.ready_timeout:.0f}s", where=pod.node)
            time.sleep(POLL)
        attachment = getattr(pod, "attachment", None)
        if attachment is not None and attachment.container_id:
            self._wait_torn_down(pod.node, attachment, pod.name, deadline)

    def _wait_torn_down(self, node: str, attachment: Attachment, pod: str,
                        deadline: float) -> None:
        host = self._node(node)
        container_id = attachment.container_id
        check = teardown_check(container_id, attachment.netns, LIBCNI_RESULTS_DIRS)

        def left_over() -> str | None:
            res = host.run(["sh", "-c", check], timeout=30)
            if res.ok and not res.stdout.strip():
                return None
            return (res.stdout or res.stderr).strip() or f"the check exited {res.rc}"

        remote.wait_until(left_over, deadline - time.monotonic(), lambda why: LabError(
            f"the runtime has not torn down pod {pod}'s sandbox {container_id[:12]} within "
            f"{self.settings.ready_timeout:.0f}s", where=node, output=why,
            hint="the CNI DEL may be failing: `lab logs` has the kubelet's journal"), POLL)

    def pods(self) -> list[KubePod]:
        out = []
        for pod in self.api.list_pods(self.namespace, f"{LAB_LABEL}={self.name}"):
            ip = pod_ip_from(pod, self.spec, self.settings)
            if (pod.get("status") or {}).get("phase") == "Running" and ip:
                out.append(self._pod(pod, ip))
        return out

    # -- what the runtime did, on the node -----------------------------------------------------
    def _runtimes(self, node: str) -> list[LibcniRuntime]:
        return [LibcniRuntime(self._node(node), self.spec, d) for d in LIBCNI_RESULTS_DIRS]

    def _entries(self, node: str) -> list[tuple[LibcniRuntime, CachedAttachment]]:
        return [(rt, e) for rt in self._runtimes(node) for e in rt.cached_attachments()]

    def _attachment_entry(self, node: str, pod: str) -> CachedAttachment | None:
        entries = [e for _, e in self._entries(node)]
        return find_pod_attachment(entries, self.namespace, pod, self.spec.name, self.spec.ifname)

    def _runtime_of(self, pod: Any) -> tuple[LibcniRuntime, CachedAttachment] | None:
        for runtime, entry in self._entries(pod.node):
            if pod_of(entry) == (self.namespace, pod.name) and entry.ifname == pod.ifname:
                return runtime, entry
        return None

    def add_result(self, pod: Any) -> dict[str, Any] | None:
        """The ADD result the node's runtime cached for the pod (None when it holds none)."""
        found = self._runtime_of(pod)
        return found[1].result if found else None

    def cni_check(self, pod: Any) -> CommandResult:
        return self.cni_call(pod, "CHECK")

    def cni_call(self, pod: Any, command: str) -> CommandResult:
        """CHECK or DEL of the pod's attachment as libcni would make it, from the runtime's
        own cache. ADD is the kubelet's: a pod sandbox is not re-attached by hand here."""
        argv = ("CNI", command, pod.attachment.container_id, pod.ifname)
        if command not in ("CHECK", "DEL"):
            raise LabError(f"{command} by hand is not for Kubernetes pods: the kubelet owns "
                           "their sandboxes", hint="delete the pod and create it again "
                                                   "(`lab pod del` / `lab pod add`)")
        found = self._runtime_of(pod)
        if found is None:
            return CommandResult(argv, 1, "", f"no cached ADD result for pod {pod.name} on "
                                              f"{pod.node} in {', '.join(LIBCNI_RESULTS_DIRS)}")
        runtime, entry = found
        try:
            if command == "CHECK":
                runtime.check(entry.container_id, entry.ifname)
            else:
                runtime.delete(entry.container_id, entry.ifname, netns=entry.netns)
        except CniCallError as e:
            return CommandResult(argv, 1, e.stdout, e.describe())
        return CommandResult(argv, 0, "", "")

    def cni_calls(self, pod: Any, command: str) -> list[tuple[list[str], str]]:
        found = self._runtime_of(pod)
        if found is None:
            raise LabError(f"no cached ADD result for pod {pod.name} on {pod.node}")
        runtime, entry = found
        return runtime.calls_for(command, entry.container_id, entry.ifname)

    def cni_status(self, node: str) -> CommandResult:
        argv = ("CNI", "STATUS", node)
        try:
            skipped = self._runtimes(node)[0].status()
        except CniCallError as e:
            return CommandResult(argv, 1, "", e.describe())
        return CommandResult(argv, 0, "", skipped)

    def add_stray_attachment(self, node: str) -> Attachment:
        return self._strays.add_stray_attachment(node)

    def delete_stray_attachment(self, attachment: Attachment) -> None:
        self._strays.delete_stray_attachment(attachment)

    def pod_subnet(self, node: str, family: int | None = None) -> str:
        """The CIDR pods on node get their test-network address from (the NAD's config)."""
        return self._strays.pod_subnet(node, family)

    def cni_gc(self, node: str) -> CommandResult:
        """GC with the attachments of this node's live pods as valid (Multus never sends GC
        for secondary networks: the harness plays the runtime here)."""
        live = {(self.namespace, p["metadata"]["name"]) for p in
                self.api.list_pods(self.namespace, f"{LAB_LABEL}={self.name}")
                if (p.get("spec") or {}).get("nodeName") == node}
        entries = [e for _, e in self._entries(node)]
        valid = valid_attachments(entries, live, node)
        return self._runtimes(node)[0].gc_result(valid)

    @property
    def cluster_network_bridges(self) -> tuple[str, ...]:
        """Bridges whose ports belong to the cluster's own network, not the plugin judged:
        flannel's cni0 when the plugin is a secondary network (none in primary mode)."""
        return () if self.settings.primary else ("cni0",)

    def host_interfaces(self, node: str) -> list[str]:
        """The plugin's veths on the node: every veth but the ports of the cluster network's
        bridge (flannel's cni0), so a plugin that bridges its own veths still shows them."""
        host = self._node(node)
        links = host.run(["ip", "-o", "link", "show", "type", "veth"]).check(node).stdout
        return sorted(line.split(":", 2)[1].strip().split("@", 1)[0]
                      for line in links.splitlines()
                      if line.count(":") >= 2
                      and not bridge_port(line, self.cluster_network_bridges))

    def ipam_leases(self, node: str) -> dict[str, str]:
        return self._strays.ipam_leases(node)

    def pod_namespaces(self, node: str) -> list[str]:
        """containerd's sandboxes on the node (cni-*: every pod there is this cluster's), and
        the strays the harness made."""
        listed = self._node(node).run(["ip", "netns", "list"]).check(node).stdout
        names = [line.split()[0] for line in listed.splitlines() if line.strip()]
        return sorted({*(n for n in names if n.startswith("cni-")),
                       *self._strays.pod_namespaces(node)})

    def close(self) -> None:
        self.api.close()
