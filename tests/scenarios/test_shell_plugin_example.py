"""A third-party plugin end to end: examples/shell-plugin (a CNI plugin in 40 lines of sh, its
cross-node routes from a node_setup hook fed the lab's PEERS list) through every scenario."""
from __future__ import annotations

import secrets
import shutil

import pytest
from example_labs import ROOT, assert_every_scenario_that_applies_passes, lab

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_the_shell_plugin_example_passes_every_scenario_that_applies(tmp_path):
    if shutil.which("jq") is None:
        pytest.skip("the shell-plugin example needs jq (scripts/setup.sh installs it)")
    config = ROOT / "examples" / "shell-plugin" / "lab.toml"
    name = "t4" + secrets.token_hex(3)
    common = ["-c", str(config), "--name", name]
    up = lab("up", *common)
    try:
        assert up.returncode == 0, up.stderr
        assert "myptp serves cniVersion 1.0.0" in up.stderr
        assert_every_scenario_that_applies_passes(config, name, tmp_path)
    finally:
        lab("down", *common)
