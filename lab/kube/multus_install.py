"""Multus on the cluster (daemonset thick/thin, or host mode), the CNI dirs each node's K3s uses,
and the network spec pods get."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from lab.api import ActionContext, LabError, NetworkSpec, Node
from lab.config.k3s import MultusSettings, sized_for
from lab.kube import cmdlines, multus
from lab.kube.airgap import resolve_inputs
from lab.kube.k3s_install import k3s_settings, split_roles
from lab.kube.paths import (
    CniDirs,
    node_cni_dirs,
)
from lab.kube.remote import POLL, apply, parallel, put_if_changed, wait_until, write_file
from lab.nodes.ssh import CommandTimeout

# --- Multus -----------------------------------------------------------------------------------

def cluster_cni_dirs(ctx: ActionContext, nodes: Sequence[Node] | None = None,
                     poll: float = POLL) -> dict[str, CniDirs]:
    """Each node's CNI dirs, read from its containerd config (waits for K3s to write it)."""
    settings = k3s_settings(ctx)
    found: dict[str, CniDirs] = {}

    def read(node: Node) -> None:
        errors: list[str] = []

        def check() -> str | None:
            try:
                found[node.name] = node_cni_dirs(node, settings.cni_bin_dir,
                                                 settings.cni_conf_dir)
                return None
            except LabError as e:
                errors[:] = [e.describe()]
                return e.what

        wait_until(check, min(settings.ready_timeout, 120),
                   lambda _: LabError("cannot tell where K3s keeps CNI plugins",
                                      where=node.name, output="\n".join(errors),
                                      hint="set k3s.cni_bin_dir and k3s.cni_conf_dir"), poll)

    parallel(list(nodes if nodes is not None else ctx.nodes), read)
    return found


def same_dirs(dirs: dict[str, CniDirs]) -> CniDirs:
    """A daemonset has one hostPath: every node must agree."""
    distinct = set(dirs.values())
    if len(distinct) != 1:
        raise LabError("nodes disagree on the CNI directories",
                       output="\n".join(f"{n}: bin {d.bin_dir}, conf {d.conf_dir}"
                                        for n, d in dirs.items()),
                       hint="run the same K3s release everywhere, or set k3s.cni_bin_dir / "
                            "k3s.cni_conf_dir")
    return distinct.pop()


class InstallMultus:
    name = "install Multus"

    def __init__(self, poll: float = POLL) -> None:
        self.poll = poll

    def run(self, ctx: ActionContext) -> None:
        settings: MultusSettings = sized_for(ctx.config.multus, ctx.emulated)
        server, _ = split_roles(ctx.config, ctx.nodes)
        dirs_by_node = cluster_cni_dirs(ctx, poll=self.poll)
        dirs = same_dirs(dirs_by_node)
        apply(server, multus.cluster_manifests(settings, dirs), f"Multus {settings.mode}")
        if settings.mode == "host":
            self._host_mode(ctx, server, settings, dirs_by_node)
        self._wait_ready(server, settings)
        if ctx.report:
            ctx.report(f"Multus {settings.version} ({settings.mode}"
                       f"{', ' + settings.flavor if settings.mode == 'daemonset' else ''})")

    def _host_mode(self, ctx: ActionContext, server: Node, settings: MultusSettings,
                   dirs_by_node: dict[str, CniDirs]) -> None:
        binary = resolve_inputs(ctx.config).multus_binary
        assert binary is not None   # resolve_inputs refuses host mode without one
        token: dict[str, str] = {}

        def secret_filled() -> str | None:
            res = server.run(cmdlines.kubectl(
                "-n", multus.NAMESPACE, "get", "secret", multus.TOKEN_SECRET, "-o", "json"))
            try:
                data = json.loads(res.stdout).get("data") or {} if res.ok else {}
            except (ValueError, AttributeError):
                data = {}
            if data.get("token") and data.get("ca.crt"):
                token.update(data)
                return None
            return "token not filled in yet"

        wait_until(secret_filled, settings.ready_timeout, lambda why: LabError(
            f"service account token for Multus: {why}", where=server.name), self.poll)
        import base64
        kube = multus.host_kubeconfig(cmdlines.server_url(server.address), token["ca.crt"],
                                      base64.b64decode(token["token"]).decode())

        def place(node: Node) -> None:
            dirs = dirs_by_node[node.name]
            put_if_changed(node, binary, f"{dirs.bin_dir}/multus", 0o755)
            write_file(node, multus.kubeconfig_path(dirs), kube, 0o600)
            master = self._master_config(node, dirs, settings.ready_timeout)
            write_file(node, f"{dirs.conf_dir}/{multus.MULTUS_CONF}",
                       json.dumps(multus.host_config(master, dirs), indent=2), 0o644)

        parallel(ctx.nodes, place)

    def _master_config(self, node: Node, dirs: CniDirs, timeout: float) -> dict[str, Any]:
        """The cluster network's config on the node (K3s writes flannel's once it runs)."""
        found: dict[str, Any] = {}

        def check() -> str | None:
            listing = node.run(["ls", "-1", dirs.conf_dir])
            name = multus.pick_master_config(listing.stdout.split()) if listing.ok else None
            if name is None:
                return f"no cluster network config in {dirs.conf_dir}"
            text = node.run(["cat", f"{dirs.conf_dir}/{name}"])
            try:
                found.update(json.loads(text.stdout))
            except ValueError:
                return f"{name} is not JSON"
            return None

        wait_until(check, timeout, lambda why: LabError(
            f"Multus host mode: {why}", where=node.name,
            hint="the cluster network (flannel, or the plugin in primary mode) must write its "
                 "config first"), self.poll)
        return found

    def _wait_ready(self, server: Node, settings: MultusSettings) -> None:
        # Polled, not one `kubectl wait`: a starved API server answers one long request with
        # "Timeout" while the CRD is still on its way; only the deadline says too late.
        def established() -> str | None:
            res = server.run(cmdlines.kubectl(
                "get", f"crd/{multus.CRD_NAME}",
                "-o", "jsonpath={.status.conditions[?(@.type==\"Established\")].status}"),
                timeout=30)
            if res.ok and res.stdout.strip() == "True":
                return None
            return (res.stderr or res.stdout).strip()[-500:] or "not established yet"

        wait_until(established, settings.ready_timeout, lambda why: LabError(
            f"the NAD CRD is not established after {settings.ready_timeout:.0f}s",
            where=server.name, output=why), self.poll)
        if settings.mode == "daemonset":
            self._wait_daemonset(server, settings)

    def _wait_daemonset(self, server: Node, settings: MultusSettings) -> None:
        # Polled like the CRD, not one `kubectl rollout status`: its watch ends at the first
        # "TLS handshake timeout" of a starved server, long before the deadline.
        def ready() -> str | None:
            res = server.run(cmdlines.kubectl("-n", multus.NAMESPACE, "get",
                                              f"daemonset/{multus.DAEMONSET}", "-o", "json"),
                             timeout=30)
            if not res.ok:
                return (res.stderr or res.stdout).strip()[-500:] or "kubectl get daemonset failed"
            try:
                return multus.daemonset_unready(json.loads(res.stdout))
            except ValueError:
                return "kubectl get daemonset gave no JSON"

        def unready(why: str) -> LabError:
            try:
                pods = server.run(cmdlines.kubectl(
                    "-n", multus.NAMESPACE, "get", "pods", "-l",
                    f"app={multus.LABELS['app']}", "-o", "json"), timeout=60)
                states = (multus.pod_states(json.loads(pods.stdout)) if pods.ok
                          else [pods.stderr.strip()[-500:]])
            except CommandTimeout as e:
                states = [f"the Multus pods could not be listed: {e.what}"]
            except ValueError:
                states = ["kubectl get pods gave no JSON"]
            return LabError(
                f"Multus daemonset not ready within {settings.ready_timeout:.0f}s: {why}",
                where=server.name, output="\n".join(states),
                hint=f"image {settings.image_ref}: is it on every node or in its registry? "
                     "Under TCG a starved server needs time: raise [multus] ready_timeout")

        wait_until(ready, settings.ready_timeout, unready, self.poll)


# --- the plugin under test --------------------------------------------------------------------

def pod_ifname(config: Any) -> str:
    """eth0 when the plugin is the cluster network; Multus's secondary name otherwise."""
    if config.k3s is not None and config.k3s.primary:
        return "eth0"
    wanted = str(getattr(config.plugin, "ifname", "") or "")
    return wanted if wanted and wanted != "eth0" else "net1"


def kube_network_spec(config: Any, nodes: Sequence[Node],
                      dirs: dict[str, CniDirs]) -> NetworkSpec:
    """The lab's NetworkSpec as K3s nodes see it: K3s's CNI_PATH, the pod-side interface."""
    from lab.runtime.network import network_spec

    spec = network_spec(config, nodes)
    paths = {name: d.cni_path for name, d in dirs.items()}
    first = nodes[0].name
    return dataclasses.replace(spec, ifname=pod_ifname(config),
                               cni_path=paths.get(first, spec.cni_path), cni_paths=paths)


def namespace_manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "cnilab"}}}
