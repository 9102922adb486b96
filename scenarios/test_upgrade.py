"""A plugin upgrade as `lab deploy` makes one: pods the old build made keep their traffic once
the new build is on the nodes and has made its first pods, a pod the new build makes reaches
them, the new build's CHECK passes on them and its DEL removes everything the old build made
for them. Which builds: scenarios/upgrade_builds.py (`--lab-upgrade-from`, `--lab-upgrade-to`).
The lab ends with the plugin it began with."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from lab.api import LabError, Pod
from lab.cluster.deploy import deploy_plugin_file, with_plugin_file

from .hostside import host_side
from .support import Probes, delete_pods, expect, failures_at_once, make_pods, require_check
from .upgrade_builds import Build, NoUpgrade, UpgradePair, upgrade_pair


@dataclass
class Upgrade:
    pair: UpgradePair
    old: dict[str, Pod]         # role -> a pod the old build made: a, b on the first node, c
    new: dict[str, Pod]         # role -> a pod the new build made: a (first node), c
    doomed: Pod                 # made by the old build alone: the new build DELs it
    doomed_made: frozenset[str]     # what the old build's ADD made for it on the host side
    live: list[Pod] = field(default_factory=list)     # what the fixture deletes at the end


def _deploy(lab: Any, build: Build, which: str) -> None:
    try:
        deploy_plugin_file(with_plugin_file(lab.config, build.path), lab.nodes())
    except LabError as e:
        pytest.fail(f"deploying {which} {build.describe()} failed:\n{e.describe()}",
                    pytrace=False)


@pytest.fixture(scope="module")
def upgrade(lab: Any, cluster: Any, pytestconfig: pytest.Config,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upgrade]:
    """Pods made by the old build, then the new build deployed and its first pods made (the
    first ADD of a new build is where it may tidy the node up); afterwards every pod is
    deleted by the new build and the lab gets its own plugin back."""
    try:
        pair = upgrade_pair(lab.config.plugin_path, pytestconfig.getoption("--lab-upgrade-from"),
                            pytestconfig.getoption("--lab-upgrade-to"),
                            tmp_path_factory.mktemp("upgrade"))
    except NoUpgrade as e:
        pytest.skip(str(e))
    except ValueError as e:
        pytest.fail(str(e), pytrace=False)
    print(pair.describe())
    first_node, *other_nodes = cluster.nodes()
    first, others = first_node.name, [n.name for n in other_nodes[:1]]
    on_the_lab, live = pair.lab, []
    try:
        if pair.old.sha256 != pair.lab.sha256:
            on_the_lab = pair.old      # before the deploy: a half-done one is undone too
            _deploy(lab, pair.old, "the old build")
        roles = [("old-a", first), ("old-b", first), *(("old-c", n) for n in others)]
        old = make_pods(cluster, roles)
        live += old
        before = host_side(cluster, first_node)
        doomed, = make_pods(cluster, [("old-del", first)])
        live.append(doomed)
        doomed_made = host_side(cluster, first_node) - before
        on_the_lab = pair.new
        _deploy(lab, pair.new, "the new build")
        new = make_pods(cluster, [("new-a", first), *(("new-c", n) for n in others)])
        live += new
        yield Upgrade(pair, {r: p for (r, _), p in zip(roles, old)},
                      {r: p for r, p in zip(("new-a", "new-c"), new)}, doomed, doomed_made,
                      live)
    finally:
        try:
            delete_pods(cluster, live)   # by the new build: what they leave, the ledger says
        finally:
            if on_the_lab.sha256 != pair.lab.sha256:
                _deploy(lab, pair.lab, "the lab's own plugin back:")


@pytest.fixture(autouse=True)
def _builds_in_the_report(request: pytest.FixtureRequest, upgrade: Upgrade) -> None:
    """Which two builds were judged, as a junit property of every upgrade scenario."""
    request.node.user_properties.append(("upgrade", upgrade.pair.describe()))


def _probe_pairs(probe: Probes, cluster: Any, pairs: list[tuple[Pod, Pod]], family: int,
                 what: str, pair: UpgradePair) -> None:
    """ICMP and TCP both ways between each pair, at once; one failure names every miss."""
    probes = [(src, dst, kind) for a, b in pairs for src, dst in ((a, b), (b, a))
              for kind in ("icmp", "tcp")]
    failed = failures_at_once(lambda src, dst, kind: probe.pod_to_pod(cluster, src, dst, family,
                                                                      kind), probes)
    expect(not failed, f"{what} ({pair.describe()}):\n" + "\n".join(failed))


def _cross_node(upgrade: Upgrade) -> None:
    if "old-c" not in upgrade.old:
        pytest.skip("cross-node scenarios need a lab with at least 2 nodes")


def test_upgrade_same_node_old_pods_keep_traffic(probe, cluster, upgrade, family):
    _probe_pairs(probe, cluster, [(upgrade.old["old-a"], upgrade.old["old-b"])], family,
                 "pods the old build made on one node lost traffic once the new build was "
                 "deployed and made its first pods", upgrade.pair)


def test_upgrade_cross_node_old_pods_keep_traffic(probe, cluster, upgrade, family):
    _cross_node(upgrade)
    _probe_pairs(probe, cluster, [(upgrade.old["old-a"], upgrade.old["old-c"])], family,
                 "pods the old build made on two nodes lost traffic once the new build was "
                 "deployed and made its first pods", upgrade.pair)


def test_upgrade_same_node_new_pod_reaches_old_pods(probe, cluster, upgrade, family):
    new = upgrade.new["new-a"]
    _probe_pairs(probe, cluster, [(new, upgrade.old["old-a"]), (new, upgrade.old["old-b"])],
                 family, "a pod the new build made and pods the old build made on its node do "
                         "not reach each other", upgrade.pair)


def test_upgrade_cross_node_new_pod_reaches_old_pods(probe, cluster, upgrade, family):
    _cross_node(upgrade)
    _probe_pairs(probe, cluster, [(upgrade.new["new-a"], upgrade.old["old-c"]),
                                  (upgrade.new["new-c"], upgrade.old["old-a"])],
                 family, "pods the new build made and pods the old build made on another node "
                         "do not reach each other", upgrade.pair)


def test_upgrade_check_by_the_new_build_passes_on_old_pods(cluster, upgrade):
    require_check(cluster)
    failed = []
    for pod in upgrade.old.values():
        res = cluster.cni_check(pod)
        if not res.ok:
            failed.append(f"pod {pod.name}@{pod.node}: {res.stderr.strip()}")
    expect(not failed, f"the new build's CHECK failed on pods the old build made, with the "
                       f"ADD results the old build gave ({upgrade.pair.describe()}):\n  "
                       + "\n  ".join(failed))


def test_upgrade_del_by_the_new_build_removes_what_the_old_build_made(cluster, upgrade):
    """DEL with the pod's netns still there (deleting it would take the host veth along), as
    test_cni_lifecycle.py judges DEL: what the old build's ADD made must all be gone."""
    pod = upgrade.doomed
    node = next(n for n in cluster.nodes() if n.name == pod.node)
    leases = cluster.ipam_type == "host-local"
    try:
        res = cluster.cni_call(pod, "DEL")
        left = sorted(upgrade.doomed_made & host_side(cluster, node))
        kept_lease = leases and pod.ip in cluster.ipam_leases(node.name)
        inside = pod.exec(["ip", "link", "show", "dev", pod.ifname])
    finally:
        upgrade.live.remove(pod)
        cluster.delete_pod(pod)
    said = f"the new build's DEL of pod {pod.name}, which the old build made"
    expect(res.ok, f"{said}, failed ({upgrade.pair.describe()}):\n{res.stderr}")
    expect(not left, f"{said} (its netns still there), left on {node.name} what the old "
                     f"build's ADD made ({upgrade.pair.describe()}):\n  " + "\n  ".join(left))
    expect(not kept_lease, f"{said}, kept its lease {pod.ip} ({upgrade.pair.describe()})")
    expect(not inside.ok, f"{said}, left its {pod.ifname} in the pod")
