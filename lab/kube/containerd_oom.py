"""containerd's restrict_oom_score_adj on nodes whose root lacks CAP_SYS_RESOURCE (container
nodes on some hosts): the kubelet asks a negative oom_score_adj for every sandbox, runc cannot
write it, and no pod starts ("getting the final child's pid from pipe caused: EOF").

    before_start()  K3s >= v1.32 (containerd 2): a template of K3s's own "base" plus an import
    after_start()   older K3s (containerd 1.x, no "base" to extend): the config K3s rendered on
                    the node becomes its template with the key added, then K3s restarts once
"""
from __future__ import annotations

from lab.api import LabError, Node
from lab.kube import cmdlines, node_kind
from lab.kube.remote import sh, write_file

RENDER_WAIT_S = 180


def before_start(node: Node, minor: int) -> None:
    if minor >= node_kind.TEMPLATE_BASE_MINOR:
        write_file(node, node_kind.CONTAINERD_OOM_FILE, node_kind.containerd_oom_import())
        write_file(node, node_kind.CONTAINERD_TEMPLATE, node_kind.containerd_oom_template())


def after_start(node: Node, role: str, minor: int, systemd: bool) -> bool:
    """Pins the rendered config where K3s has no template to extend; True when K3s was
    restarted for it (False: nothing to do, or pinned by an earlier run)."""
    if minor >= node_kind.TEMPLATE_BASE_MINOR:
        return False
    res = node.run(["sh", "-c", node_kind.pin_rendered_config(RENDER_WAIT_S)],
                   timeout=RENDER_WAIT_S + 30)
    if res.rc in (3, 4):
        raise LabError("cannot add restrict_oom_score_adj to containerd's config: "
                       + (f"K3s wrote none within {RENDER_WAIT_S} s" if res.rc == 3 else
                          f"no CRI table in {node_kind.RENDERED_CONFIG}"),
                       where=node.name, output=res.stderr or res.stdout,
                       hint="this node's root cannot lower oom_score_adj (no CAP_SYS_RESOURCE); "
                            "run the lab where it can, or use K3s v1."
                            f"{node_kind.TEMPLATE_BASE_MINOR} or newer")
    if not res.ok:
        raise LabError("cannot pin containerd's config", where=node.name,
                       output=res.stderr or res.stdout)
    if "pinned" not in res.stdout:
        return False
    restart = (f"systemctl restart {cmdlines.SERVICE[role]}" if systemd
               else node_kind.restart_supervised(role))
    sh(node, restart, timeout=120, what=f"cannot restart K3s {role} with the pinned config")
    return True
