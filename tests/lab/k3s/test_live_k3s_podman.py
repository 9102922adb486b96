"""The Kubernetes path on container nodes (issue 21): `lab up` of examples/k3s-podman.toml as
shipped (3 podman nodes, air-gapped K3s, Multus in host mode, the plugin as net1), the
scenario suites through pods, and `lab down` leaving no container, volume, switch or host
port. Minutes, not the half hour of the VM labs: CI runs it first among the K3s labs. Skips,
naming what is missing, without the inputs ($CNILAB_INPUTS_DIR, default
/var/cache/cnilab/inputs: k3s-v1.35.0/k3s, multus-v4.2.4/bin/multus) or podman."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_k3s import (
    LiveLab,
    airgap_from_inputs,
    assert_suite_passed,
    podman_lab,
    require_podman,
    run_scenarios,
)

pytestmark = [pytest.mark.k8s, pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1800)]

EXAMPLE = "k3s-podman.toml"
NEEDS = 10          # minutes for up, the suites and down, with room on a loaded 2-core host
UP_TARGET = 90      # seconds, issue 21 (a quiet machine); asserted with room for a busy one
EXPECTED_SKIPS: dict[str, str] = {}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    require_podman()
    tmp = tmp_path_factory.mktemp("k3s-podman")
    # the example's releases, from the inputs built from their public source
    folder = airgap_from_inputs(tmp / "airgap", "v1.35.0+k3s1", "v4.2.4", "host")
    with podman_lab(EXAMPLE, tmp, NEEDS, folder=folder) as lab:
        yield lab


def test_lab_up_runs_every_phase_in_minutes(live, record_property):
    for phase in ("provision 3 podman nodes", "install K3s server", "install K3s agents",
                  "wait for every node to be Ready", "unpack the pod images on every node",
                  "install Multus", "deploy the plugin and its NetworkAttachmentDefinition"):
        assert any(p.startswith(phase) for p in live.phases), (phase, live.up_output)
    for phase, seconds in live.phases.items():
        record_property(f"up: {phase}", seconds)
    record_property("up: total", round(live.up_seconds, 1))
    assert live.up_seconds < 3 * UP_TARGET, f"lab up took {live.up_seconds:.0f} s"


def test_k3s_runs_supervised_inside_each_nodes_cgroup(live):
    """No systemd in a container node: K3s runs under the supervisor, inside the node's own
    cgroup (its kubelet makes the pod cgroups below it, never at the host's root)."""
    for node, service in (("node1", "k3s"), ("node2", "k3s-agent")):
        # the supervisor's child is K3s; its log is there
        res = live.lab("exec", node, "--", "sh", "-c",
                       f"test -s /var/log/{service}.log && "
                       f"pgrep -P \"$(cat /run/cnilab-{service}.pid)\"", timeout=60)
        assert res.returncode == 0, (node, res.stdout, res.stderr)
        pid = res.stdout.split()[0]
        cgroup = live.lab("exec", node, "--", "cat", f"/proc/{pid}/cgroup", timeout=60).stdout
        assert cgroup and all(line.endswith(":/") for line in cgroup.splitlines()), cgroup


def test_scenario_suites_pass_through_pods(live, tmp_path, record_property):
    result = run_scenarios(live, tmp_path)
    record_property("suites seconds", round(result.seconds, 1))
    assert_suite_passed(result, EXPECTED_SKIPS)
    assert len(result.passed) >= 10, result
