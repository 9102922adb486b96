"""A third-party plugin end to end: examples/shell-plugin (a CNI plugin in 40 lines of sh, its
cross-node routes from a node_setup hook fed the lab's PEERS list) through every scenario."""
from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LAB = [sys.executable, "-c", "from lab.cli import main_entry; main_entry()"]


def test_the_shell_plugin_example_passes_every_scenario_that_applies(tmp_path):
    if shutil.which("jq") is None:
        pytest.skip("the shell-plugin example needs jq (scripts/setup.sh installs it)")
    config = ROOT / "examples" / "shell-plugin" / "lab.toml"
    name = "t4" + secrets.token_hex(3)
    common = ["-c", str(config), "--name", name]
    up = subprocess.run([*LAB, "up", *common], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        assert "myptp serves cniVersion 1.0.0" in up.stderr
        junit = tmp_path / "report.xml"
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "scenarios/",
             "--lab-config", str(config), "--lab-name", name, f"--junitxml={junit}", "-q"],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
        outcomes = {}
        for case in ET.parse(junit).getroot().iter("testcase"):
            tags = {child.tag for child in case}
            outcomes[case.get("name")] = next(
                (t for t in ("failure", "error", "skipped") if t in tags), "passed")
        assert len(outcomes) >= 18, sorted(outcomes)
        bad = {t: o for t, o in outcomes.items() if o != "passed"}
        # GC does not exist at the config's CNI 1.0.0: not applicable, not a failure
        assert bad == {"test_gc_removes_a_leaked_attachment_and_keeps_live_ones": "skipped"}, (
            bad, suite.stdout[-3000:])
    finally:
        subprocess.run([*LAB, "down", *common], cwd=ROOT, capture_output=True, timeout=120)
