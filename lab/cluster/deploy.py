"""A plugin file onto every node of a running lab, the way each kind of lab takes it: what
`lab deploy` does after its build, and what the upgrade scenario does with another build.

netns and VM labs: the file where the harness's runtime looks for it, then plugin.node_setup
again; K3s labs: each node's CNI bin dir and the NAD (or conflist), kube/deploy.py's way.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lab.api import ActionContext, Node
from lab.config import LabConfig


def with_plugin_file(config: LabConfig, path: Path) -> LabConfig:
    """The lab's config with another file as its plugin: installed under the same type, never
    rebuilt (`[plugin] build` makes the lab's own file, not this one)."""
    plugin = config.plugin.model_copy(update={"path": path.resolve(),
                                              "type": config.plugin.plugin_type,
                                              "build": None})
    return config.model_copy(update={"plugin": plugin})


def deploy_plugin_file(config: LabConfig, nodes: Sequence[Node],
                       report: Callable[[str], None] | None = None) -> None:
    """config.plugin_path onto every node; pods made before keep their attachment."""
    if config.k3s is not None:
        from lab.kube.deploy import deploy_plugin

        deploy_plugin(config, nodes, report)
        return
    from lab.cluster.actions import InstallPlugin, node_setup_actions

    ctx = ActionContext(config=config, nodes=list(nodes), state_dir=config.harness_dir,
                        report=report)
    for action in [InstallPlugin(), *node_setup_actions(config)]:
        action.run(ctx)
