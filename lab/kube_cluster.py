"""The Kubernetes driver of the scenario Cluster: real pods on K3s, the plugin attached by Multus
(net1) or as the cluster network (eth0); the same scenario files as on the netns lab.

Pods are pinned with nodeName and carry the k8s.v1.cni.cncf.io/networks annotation; exec goes
through the API (kubernetes client, websocket stream); the test interface's IP is read from the
network-status annotation Multus writes (primary mode: status.podIP). What the runtime did on a
node is read there over Node.run: libcni's result cache gives the pod's container ID, netns and
ADD result, so CHECK and GC run the plugin by hand exactly as the runtime would.

The API boundary is `KubeApi` (a few calls, nothing else imports kubernetes); everything around
it is plain functions, unit-tested without a cluster.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.api import Attachment, CommandResult, LabError, NetworkSpec, Node
from lab.cni_runtime import CachedAttachment, CniCallError, CniRuntime
from lab.k3s import actions, commands, kubeconfig, nad
from lab.k3s.settings import K3sSettings

LAB_LABEL = "cnilab.dev/lab"
MANAGED_BY = {"app.kubernetes.io/managed-by": "cnilab"}
# libcni's cache: containerd (primary network) writes the first, Multus's delegates the second.
LIBCNI_RESULTS_DIRS = ("/var/lib/cni/results", "/var/lib/cni/multus/results")
POLL = 1.0


# --- pure parts ---------------------------------------------------------------------------------

def pod_manifest(name: str, node: str, *, lab: str, settings: K3sSettings,
                 spec: NetworkSpec) -> dict[str, Any]:
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
                "name": "pod", "image": settings.pod_image,
                "imagePullPolicy": settings.pod_image_pull_policy,
                "command": ["sleep", "infinity"],
                # Scenarios tamper with the pod's address and routes (CHECK must notice).
                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
            }],
        },
    }


def pod_ip_from(pod: dict[str, Any], spec: NetworkSpec, settings: K3sSettings) -> str | None:
    """The IPv4 of the interface under test: network-status (Multus) or status.podIP (primary)."""
    if settings.primary:
        ip = (pod.get("status") or {}).get("podIP")
        return str(ip) if ip and ":" not in str(ip) else None
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return nad.attachment_ip(annotations.get(nad.NETWORK_STATUS_ANNOTATION), spec,
                             settings.namespace)


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
            res = self.node.run([commands.K3S_BIN, "crictl", "inspectp", "-o", "json",
                                 container_id])
            netns = netns_from_inspectp(res.stdout) if res.ok else ""
            entry = CachedAttachment(entry.container_id, entry.ifname, entry.network, netns,
                                     entry.cni_args, entry.result)
        return entry


# --- the API boundary ---------------------------------------------------------------------------

class KubeApi:
    """The few Kubernetes calls the driver makes (kubernetes client; not run on this machine)."""

    def __init__(self, kubeconfig_path: Path) -> None:
        from kubernetes import client, config

        self._client = config.new_client_from_config(config_file=str(kubeconfig_path))
        self.core = client.CoreV1Api(self._client)
        self._api_exception = client.exceptions.ApiException

    def ensure_namespace(self, name: str) -> None:
        try:
            # The client serializes plain dicts as they are; its stubs only name the models.
            body: Any = {"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": name, "labels": MANAGED_BY}}
            self.core.create_namespace(body)
        except self._api_exception as e:
            if e.status != 409:
                raise

    def create_pod(self, manifest: dict[str, Any]) -> None:
        body: Any = manifest
        meta = manifest["metadata"]
        try:
            self.core.create_namespaced_pod(meta["namespace"], body)
        except self._api_exception as e:
            if e.status == 409:
                raise LabError(f"pod {meta['namespace']}/{meta['name']} already exists",
                               hint="delete it first, or give the new pod another name") from None
            raise

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod = self.core.read_namespaced_pod(name, namespace)
        except self._api_exception as e:
            if e.status == 404:
                return None
            raise
        return dict(self._client.sanitize_for_serialization(pod))

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector)
        return [dict(self._client.sanitize_for_serialization(p)) for p in pods.items]

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except self._api_exception as e:
            if e.status != 404:
                raise

    def exec(self, namespace: str, name: str, argv: Sequence[str],
             timeout: float) -> CommandResult:
        from kubernetes.stream import stream

        resp = stream(self.core.connect_get_namespaced_pod_exec, name, namespace,
                      command=list(argv), stdout=True, stderr=True, stdin=False, tty=False,
                      _preload_content=False)
        try:
            resp.run_forever(timeout=timeout)
            out, err = resp.read_stdout() or "", resp.read_stderr() or ""
            rc = resp.returncode
        finally:
            resp.close()
        if rc is None:
            return CommandResult(tuple(argv), 124, out, err + f"\ntimed out after {timeout}s")
        return CommandResult(tuple(argv), int(rc), out, err)

    def close(self) -> None:
        self._client.close()


# --- the Cluster --------------------------------------------------------------------------------

@dataclass(frozen=True)
class KubePod:
    name: str
    node: str
    ifname: str
    ip: str
    attachment: Attachment
    namespace: str
    api: KubeApi = field(repr=False, compare=False)

    def exec(self, argv: Sequence[str], *, timeout: float = 30) -> CommandResult:
        return self.api.exec(self.namespace, self.name, argv, timeout)


class KubeCluster:
    """api.Cluster on a K3s lab (lab.session builds it when the config has [k3s])."""

    def __init__(self, lab: Any, api: KubeApi | None = None) -> None:
        from lab.api import ActionContext

        config = lab.config
        self.settings: K3sSettings = config.k3s
        self.name = config.name
        self._nodes: list[Node] = lab.nodes()
        ctx = ActionContext(config=config, nodes=self._nodes, state_dir=config.harness_dir)
        self.dirs = actions.cluster_cni_dirs(ctx)
        self.spec = actions.kube_network_spec(config, self._nodes, self.dirs)
        self.network_name, self.plugin_type, self.mtu = (
            self.spec.name, self.spec.plugin_type, self.spec.mtu)
        path = self.kubeconfig_path = kubeconfig.state_path(config.harness_dir)
        if api is None and not path.exists():
            raise LabError(f"no kubeconfig for lab {self.name} at {path}",
                           hint="run `lab up` (it fetches it) or `lab kubeconfig`")
        self.api = api or KubeApi(path)
        self.namespace = self.settings.namespace
        self.api.ensure_namespace(self.namespace)
        # Stray attachments live in namespaces the harness makes on the node, cached in the
        # node's own state dir, the way the netns driver does it.
        from lab.podns import NamespacePodCluster
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

    def create_pod(self, name: str, node: str) -> KubePod:
        self._node(node)
        self.api.create_pod(pod_manifest(name, node, lab=self.name, settings=self.settings,
                                         spec=self.spec))
        deadline = time.monotonic() + self.settings.ready_timeout
        problem = "not created"
        while time.monotonic() < deadline:
            pod = self.api.read_pod(self.namespace, name)
            if pod is not None:
                phase = (pod.get("status") or {}).get("phase")
                ip = pod_ip_from(pod, self.spec, self.settings)
                if phase == "Running" and ip:
                    return self._pod(pod, ip)
                problem = pod_phase_problem(pod) if phase != "Running" else \
                    f"running, but no {self.spec.ifname} address in network-status"
            time.sleep(POLL)
        raise LabError(f"pod {self.namespace}/{name} not running on {node} within "
                       f"{self.settings.ready_timeout:.0f}s", where=node, output=problem,
                       hint=f"kubectl --kubeconfig {self.kubeconfig_path} "
                            f"-n {self.namespace} describe pod {name}")

    def _pod(self, pod: dict[str, Any], ip: str) -> KubePod:
        meta, node = pod["metadata"], pod["spec"]["nodeName"]
        entry = self._attachment_entry(node, meta["name"])
        attachment = entry.attachment(node) if entry else Attachment("", self.spec.ifname, node)
        return KubePod(name=meta["name"], node=node, ifname=self.spec.ifname, ip=ip,
                       attachment=attachment, namespace=self.namespace, api=self.api)

    def delete_pod(self, pod: Any) -> None:
        self.api.delete_pod(self.namespace, pod.name)
        deadline = time.monotonic() + self.settings.ready_timeout
        while time.monotonic() < deadline:
            if self.api.read_pod(self.namespace, pod.name) is None:
                return
            time.sleep(POLL)
        raise LabError(f"pod {self.namespace}/{pod.name} still exists after "
                       f"{self.settings.ready_timeout:.0f}s", where=pod.node)

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

    def cni_check(self, pod: Any) -> CommandResult:
        argv = ("CNI", "CHECK", pod.attachment.container_id, pod.ifname)
        for runtime, entry in self._entries(pod.node):
            if pod_of(entry) == (self.namespace, pod.name) and entry.ifname == pod.ifname:
                try:
                    runtime.check(entry.container_id, entry.ifname)
                except CniCallError as e:
                    return CommandResult(argv, 1, "", e.describe())
                return CommandResult(argv, 0, "", "")
        return CommandResult(argv, 1, "", f"no cached ADD result for pod {pod.name} on "
                                          f"{pod.node} in {', '.join(LIBCNI_RESULTS_DIRS)}")

    def add_stray_attachment(self, node: str) -> Attachment:
        return self._strays.add_stray_attachment(node)

    def delete_stray_attachment(self, attachment: Attachment) -> None:
        self._strays.delete_stray_attachment(attachment)

    def pod_subnet(self, node: str) -> str:
        """The CIDR pods on node get their test-network address from (the NAD's config)."""
        return self._strays.pod_subnet(node)

    def cni_gc(self, node: str) -> CommandResult:
        """GC with the attachments of this node's live pods as valid (Multus never sends GC
        for secondary networks: the harness plays the runtime here)."""
        live = {(self.namespace, p["metadata"]["name"]) for p in
                self.api.list_pods(self.namespace, f"{LAB_LABEL}={self.name}")
                if (p.get("spec") or {}).get("nodeName") == node}
        entries = [e for _, e in self._entries(node)]
        valid = valid_attachments(entries, live, node)
        return self._runtimes(node)[0].gc_result(valid)

    def host_interfaces(self, node: str) -> list[str]:
        """Our veths on the node: flannel's pods hang off its cni0 bridge, ours hang off none."""
        host = self._node(node)
        links = host.run(["ip", "-o", "link", "show", "type", "veth"]).check(node).stdout
        return sorted(line.split(":", 2)[1].strip().split("@", 1)[0]
                      for line in links.splitlines()
                      if line.count(":") >= 2 and " master " not in line)

    def ipam_leases(self, node: str) -> dict[str, str]:
        return self._strays.ipam_leases(node)

    def close(self) -> None:
        self.api.close()
