"""K3s releases by Multus modes by secondary or primary networks, live on container nodes
(issue 18): each combination is a shipped container-node example with only its releases
changed, brought up with the inputs built from public source, judged by the scenario suites
through pods, with a `lab deploy` of a changed build timed, and taken down leaving nothing.

What CI runs (`ci=True`) fits its 90 minutes beside the rest of the tests; the others run when
CNILAB_K3S_MATRIX=all. Every figure (phases of `lab up`, suite and deploy seconds) is recorded
as a test property, and appended as one JSON line to $CNILAB_MATRIX_RECORD when that is set
(docs/k8s.md's table is made from those lines). Skips name the missing inputs
($CNILAB_INPUTS_DIR, default /var/cache/cnilab/inputs)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_k3s import (
    REPO,
    airgap_from_inputs,
    assert_suite_passed,
    k3s_input,
    podman_lab,
    require_podman,
    run_lab,
    run_scenarios,
)
from vm_lab import free_subnet6

pytestmark = [pytest.mark.k8s, pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1800)]

NEEDS = 8           # minutes for up, the suites, a deploy and down on a busy 2-core host


@dataclass(frozen=True)
class Combo:
    k3s_minor: int
    multus: str | None          # Multus release, None: no Multus (primary network)
    mode: str                   # "host" (thin binary on the nodes), "thick" (daemonset), ""
    dual_stack: bool = False
    ci: bool = False

    @property
    def example(self) -> str:
        if self.multus is None:
            return "k3s-podman-primary.toml"            # dual-stack, host-gw, flannel off
        return "k3s-podman-thick.toml" if self.mode == "thick" else "k3s-podman.toml"

    @property
    def id(self) -> str:
        network = (f"multus-{self.mode}-{self.multus}" if self.multus
                   else "primary")
        return f"v1.{self.k3s_minor}-{network}" + ("-dual" if self.dual_stack else "")


MATRIX = (
    Combo(35, "v4.2.4", "host"),                # = test_live_k3s_podman, run there in CI
    Combo(35, "v4.2.4", "thick"),
    Combo(35, "v4.0.2", "thick"),
    Combo(35, None, "", dual_stack=True),       # the primary example is dual-stack
    Combo(35, "v4.2.4", "host", dual_stack=True, ci=True),
    Combo(28, "v4.2.4", "host"),
    Combo(28, "v4.0.2", "thick"),               # the blog post's pair, in CI through its test
    Combo(28, "v4.2.4", "thick"),
    Combo(28, None, "", dual_stack=True, ci=True),
    Combo(21, "v4.0.2", "host"),
    Combo(21, "v4.0.2", "thick", ci=True),
    Combo(21, None, "", dual_stack=True),
)


def edit_for(combo: Combo, version: str) -> Callable[[str], str]:
    """The example's text with this combination's releases (and a second family)."""
    def edit(text: str) -> str:
        text, k3s = re.subn(r'(?m)^version = "v1\.\d+[^"]*"', f'version = "{version}"', text)
        assert k3s == 1, f"{combo.example}: no [k3s] version line"
        if combo.multus:
            text = re.sub(r'(?m)^version = "v4\.[^"]*"', f'version = "{combo.multus}"', text)
        if combo.dual_stack and combo.multus:   # the secondary examples are IPv4 only
            text = re.sub(r'(?m)^underlay = ("[^"]+")', rf'underlay = [\1, "{free_subnet6()}"]',
                          text)
            text = re.sub(r'(?m)^pod_cidr = "([^"]+)"', r'pod_cidr = ["\1", "fd00:244::/56"]',
                          text)
        return text
    return edit


def expected_skips(combo: Combo) -> dict[str, str]:
    """Skips that are true on this combination: GC needs CNI 1.1.0, which Multus v4.0.x does
    not speak, nor the network config the harness writes for a primary network (a runtime's
    conflist stays at 1.0.0: lab.config.k3s.runtime_max_cni_version)."""
    if combo.multus == "v4.0.2" or combo.multus is None:
        return {"test_gc_removes_a_leaked_attachment_and_keeps_live_ones":
                "GC exists from CNI 1.1.0"}
    return {}


def record(label: str, figures: dict[str, object], record_property) -> None:
    for key, value in figures.items():
        record_property(key, value)
    target = os.environ.get("CNILAB_MATRIX_RECORD")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps({"combo": label, **figures}) + "\n")


def timed_deploy(live, tmp_path: Path) -> float:
    """Seconds of `lab deploy` of a changed build (the same sources without bytecode: other
    bytes), checked to have replaced the plugin; the lab's own build is deployed back."""
    variant = tmp_path / "cnilab"
    subprocess.run([sys.executable, "-m", "plugin.build", "-o", str(variant), "--no-bytecode"],
                   cwd=REPO, capture_output=True, text=True, check=True, timeout=300)
    config = tmp_path / "variant.toml"
    config.write_text(live.config.read_text().replace(f'path = "{REPO}/dist/cnilab"',
                                                      f'path = "{variant}"'))
    started = time.monotonic()
    deployed = run_lab("deploy", config=config, env=live.env, timeout=300)
    seconds = time.monotonic() - started
    assert deployed.returncode == 0, deployed.stderr
    assert "replaced" in deployed.stdout + deployed.stderr, deployed.stderr
    back = live.lab("deploy", timeout=300)
    assert back.returncode == 0, back.stderr
    return seconds


@pytest.mark.parametrize("combo", MATRIX, ids=lambda c: c.id)
def test_combination_comes_up_passes_the_suites_and_deploys(combo: Combo, tmp_path: Path,
                                                            record_property):
    if not combo.ci and os.environ.get("CNILAB_K3S_MATRIX") != "all":
        pytest.skip("not in CI's share of the matrix (90 minutes in all): run with "
                    "CNILAB_K3S_MATRIX=all; docs/k8s.md has its last figures")
    require_podman()
    _binary, version = k3s_input(combo.k3s_minor)
    folder = airgap_from_inputs(tmp_path / "airgap", version, combo.multus, combo.mode or "host")
    with podman_lab(combo.example, tmp_path, NEEDS, folder=folder,
                    edit=edit_for(combo, version)) as live:
        result = run_scenarios(live, tmp_path)
        deploy_s = timed_deploy(live, tmp_path)
        figures: dict[str, object] = {f"up: {p}": s for p, s in live.phases.items()}
        figures.update({"k3s": version, "up: total": round(live.up_seconds, 1),
                        "suites seconds": round(result.seconds, 1),
                        "suites passed": len(result.passed),
                        "suites skipped": len(result.skipped),
                        "suites failed": len(result.failed),
                        "deploy seconds": round(deploy_s, 1)})
        record(combo.id, figures, record_property)
        assert_suite_passed(result, expected_skips(combo))
        assert len(result.passed) >= 10, result


def test_the_go_plugin_as_the_cluster_network(tmp_path: Path, record_property):
    """examples/k3s-podman-go-plugin.toml: the Go plugin built by `lab up`, judged through pods
    as K3s's only network, and `lab deploy` rebuilding it."""
    if shutil.which("go") is None:
        pytest.skip("the Go plugin example needs the Go toolchain (`go` on PATH, 1.24 or newer)")
    require_podman()
    _binary, version = k3s_input(35)
    folder = airgap_from_inputs(tmp_path / "airgap", version)
    examples = REPO / "examples"

    def ours(text: str) -> str:     # the copy lives elsewhere: its relative paths made absolute
        text = text.replace('version = "v1.35.0+k3s1"', f'version = "{version}"')
        return (text.replace('"go-plugin/', f'"{examples}/go-plugin/')
                .replace("cd go-plugin &&", f"cd {examples}/go-plugin &&"))

    with podman_lab("k3s-podman-go-plugin.toml", tmp_path, NEEDS, folder=folder,
                    edit=ours) as live:
        result = run_scenarios(live, tmp_path)
        started = time.monotonic()
        deployed = live.lab("deploy", timeout=600)
        deploy_s = time.monotonic() - started
        assert deployed.returncode == 0, deployed.stderr
        assert "go build" in deployed.stdout + deployed.stderr, deployed.stderr
        record("v1.35-go-ptp-primary", {"k3s": version, "up: total": round(live.up_seconds, 1),
                                        "suites seconds": round(result.seconds, 1),
                                        "suites passed": len(result.passed),
                                        "deploy seconds": round(deploy_s, 1)},
               record_property)
        assert_suite_passed(result, expected_skips(Combo(35, None, "")))
        assert len(result.passed) >= 20, result
