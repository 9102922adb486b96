"""`lab up` after provisioning, when [k3s] is set: nodes -> K3s cluster -> Multus -> plugin + NAD.

Each action is idempotent (re-running `lab up` converges) and talks to nodes only through
`Node.run` / `Node.put_file`, as root. kubectl runs on the server node (K3s's own, with its admin
kubeconfig), so nothing here needs the kubernetes client or a route from the harness to the API.

    install K3s server      binary (download + checksum, or the air-gapped file), images, token,
                            unit or install.sh; waits for the API
    install K3s agents      the same on every other node, in parallel, joining the server
    [primary] deploy plugin the plugin + its conflist (nodes turn Ready only once it is there)
    wait for nodes Ready    timeout names the node(s) that did not come up and why
    [air-gapped] unpack     the pod and pause images into each node's snapshotter, in parallel
    fetch kubeconfig        <state_dir>/kubeconfig, 0600, server address rewritten
    install Multus          daemonset (thick/thin) or host mode; waits until ready
    deploy plugin           the plugin into each node's CNI bin dir + the NAD
"""
from __future__ import annotations

from typing import Any

from lab.api import Action, LabError
from lab.config.k3s import K3sSettings
from lab.kube.deploy import DeployPlugin
from lab.kube.k3s_install import (
    FetchKubeconfig,
    InstallK3sAgents,
    InstallK3sServer,
    WaitNodesReady,
)
from lab.kube.multus_install import InstallMultus
from lab.kube.unpack_images import UnpackPodImages


def cluster_actions(config: Any) -> list[Action]:
    """The ordered K3s actions for a lab config with [k3s] (lab.cluster.actions calls this)."""
    settings: K3sSettings = config.k3s
    actions: list[Action] = [InstallK3sServer(), InstallK3sAgents()]
    if settings.primary:
        actions.append(DeployPlugin(primary=True))
    actions.append(WaitNodesReady())
    if settings.mode == "airgap":
        actions.append(UnpackPodImages())
    actions.append(FetchKubeconfig())
    if config.multus is not None:
        actions.append(InstallMultus())
    if not settings.primary:
        if config.multus is None:
            raise LabError("[k3s] without [multus] and primary = false leaves the plugin no way "
                           "into pods", hint="add a [multus] section, or set k3s.primary = true")
        actions.append(DeployPlugin(primary=False))
    return actions
