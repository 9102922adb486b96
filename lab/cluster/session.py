"""Opening an existing lab: config + provider + nodes + the scenario cluster driver.

Contract used by the pytest plugin and the CLI:

    lab = open_lab(Path("lab.toml"), name=None)   # name overrides config's lab name
    lab.config      -> lab.config.LabConfig
    lab.provider    -> lab.api.Provider
    lab.nodes()     -> list[lab.api.Node]
    lab.network()   -> lab.api.NetworkSpec
    lab.cluster()   -> lab.api.Cluster   (netns pods on nodes, or Kubernetes when k3s is on)
    lab.close()
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import cast

from lab.api import Cluster, LabError, NetworkSpec, Node, Provider
from lab.config import LabConfig, load_config
from lab.nodes.providers import make_provider
from lab.runtime.network import network_spec


class Lab:
    def __init__(self, config: LabConfig, provider: Provider | None = None) -> None:
        self.config = config
        self.provider = provider if provider is not None else make_provider(config)
        self._nodes: list[Node] | None = None
        self._clusters: list[Cluster] = []

    @property
    def name(self) -> str:
        return self.config.name

    def nodes(self, refresh: bool = False) -> list[Node]:
        if self._nodes is None or refresh:
            self._nodes = self.provider.nodes()
        return list(self._nodes)

    def node(self, name: str) -> Node:
        for node in self.nodes():
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes()) or "none: run `lab up`"
        raise LabError(f"no node {name!r} in lab {self.name}", hint=f"nodes: {known}")

    def network(self) -> NetworkSpec:
        return network_spec(self.config, self.nodes())

    def cluster(self) -> Cluster:
        nodes = self.nodes()
        if not nodes:
            raise LabError(f"lab {self.name} has no nodes", hint="run `lab up` first")
        # Both drivers belong to other parts of the harness and are loaded only when asked for.
        if self.config.k3s is not None:
            kube = importlib.import_module("lab.drivers.kube_cluster")
            cluster = cast(Cluster, kube.KubeCluster(self))
        else:
            podns = importlib.import_module("lab.drivers.podns")
            cluster = cast(Cluster, podns.NamespacePodCluster(self.name, nodes, self.network()))
        self._clusters.append(cluster)
        return cluster

    def close(self) -> None:
        while self._clusters:
            self._clusters.pop().close()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_lab(config_path: Path, name: str | None = None) -> Lab:
    return Lab(load_config(Path(config_path), name))
