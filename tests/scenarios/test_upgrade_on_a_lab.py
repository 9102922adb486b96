"""The upgrade scenario on a real 2-node netns lab with our plugin: to a second build when no
build is named, from a named old build to the lab's plugin; each run passes and leaves every
node with the plugin the lab began with."""
from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_broken_kit import _NETWORK, _NODES, LAB, PLUGIN, ROOT, _need_plugin_build

from lab.cluster.session import open_lab
from lab.nodes.providers import plugin_dir

pytestmark = [pytest.mark.root, pytest.mark.slow]
UPGRADE_TESTS = 6


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _on_the_nodes(config: Path, name: str) -> set[str]:
    """sha256 of the plugin file on each node, read where the runtime finds it."""
    lab = open_lab(config, name)
    found = set()
    for node in lab.nodes():
        path = f"{plugin_dir(lab.config.lab.provider, node)}/{lab.config.plugin.plugin_type}"
        found.add(_sha256(Path(path).read_bytes()))
    return found


def _upgrade_suite(config: Path, name: str, out: Path, *options: str) -> tuple[list[str], str]:
    junit = out / "junit.xml"
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "scenarios/test_upgrade.py",
         "--lab-config", str(config), "--lab-name", name, f"--junitxml={junit}",
         f"--lab-logs-dir={out / 'logs'}", "-q", "-s", "-o", "addopts=--strict-markers",
         *options],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert junit.exists(), suite.stdout[-3000:] + suite.stderr[-2000:]
    bad = [f"{case.get('name')}: {child.tag}" for case in ET.parse(junit).iter("testcase")
           for child in case if child.tag in ("failure", "error", "skipped")]
    passed = [str(case.get("name")) for case in ET.parse(junit).iter("testcase")
              if not any(child.tag in ("failure", "error", "skipped") for child in case)]
    assert not bad, "\n".join(bad) + "\n" + suite.stdout[-4000:]
    return passed, suite.stdout


def test_upgrades_pass_and_the_lab_keeps_its_own_plugin(tmp_path):
    _need_plugin_build()
    lab_plugin = ROOT / "dist" / "cnilab"
    ours = _sha256(lab_plugin.read_bytes())
    older = tmp_path / "cnilab-older"
    built = subprocess.run([sys.executable, "-m", "plugin.build", "-o", str(older),
                            "--no-bytecode"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    name = f"t4{secrets.token_hex(3)}"
    config = tmp_path / "lab.toml"
    config.write_text(f'[lab]\nname = "{name}"\n{_NODES}{_NETWORK}'
                      + PLUGIN["cnilab"].replace("{path}", str(lab_plugin)))
    common = ["-c", str(config), "--name", name]
    try:
        up = subprocess.run([*LAB, "up", *common], cwd=ROOT, capture_output=True, text=True,
                            timeout=180)
        assert up.returncode == 0, up.stderr[-2000:]
        (tmp_path / "second").mkdir()
        passed, said = _upgrade_suite(config, name, tmp_path / "second")
        assert len(passed) == UPGRADE_TESTS, passed
        assert "to `python -m plugin.build --stamp" in said, said[-2000:]
        assert _on_the_nodes(config, name) == {ours}

        (tmp_path / "from").mkdir()
        passed, said = _upgrade_suite(config, name, tmp_path / "from",
                                      "--lab-upgrade-from", str(older))
        assert len(passed) == UPGRADE_TESTS, passed
        assert f"upgrade from --lab-upgrade-from {older}" in said, said[-2000:]
        assert _on_the_nodes(config, name) == {ours}
    finally:
        subprocess.run([*LAB, "down", *common], cwd=ROOT, capture_output=True, timeout=120)
