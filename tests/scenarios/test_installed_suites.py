"""The suites from another repository: cnilab installed from its wheel, a plugin author's own
lab.toml in their own directory, `pytest --pyargs cnilab_scenarios` (no checkout of cnilab)."""
from __future__ import annotations

import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          **kwargs)


def test_suites_run_from_the_installed_wheel_in_another_directory(tmp_path):
    wheels, site, other = tmp_path / "wheels", tmp_path / "site", tmp_path / "their-repo"
    built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                  str(REPO)])
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("cnilab-*.whl"))
    installed = _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                      str(site), str(wheel)])
    assert installed.returncode == 0, installed.stderr
    assert (site / "cnilab_scenarios" / "test_same_node.py").is_file()
    assert not (site / "cnilab_scenarios" / "conftest.py").read_text().count("from conftest")

    other.mkdir()
    name = "t4" + secrets.token_hex(3)
    (other / "lab.toml").write_text(
        f'[lab]\nname = "{name}"\nstate_dir = "{tmp_path}/state"\n'
        '[[nodes]]\nname = "node1"\n[[nodes]]\nname = "node2"\n'
        f'[plugin]\npath = "{REPO}/dist/cnilab"\ntype = "cnilab"\n')
    env = {"PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(site),
           "HOME": str(tmp_path)}
    lab = [sys.executable, "-c", "from lab.cli import main_entry; main_entry()"]
    up = _run([*lab, "up"], cwd=other, env=env)
    try:
        assert up.returncode == 0, up.stderr
        junit = tmp_path / "report.xml"
        suite = _run([sys.executable, "-m", "pytest", "--pyargs", "cnilab_scenarios",
                      "--lab-config", "lab.toml", "-p", "no:cacheprovider", "-q",
                      f"--junitxml={junit}"], cwd=other, env=env)
        assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-2000:]
        cases = list(ET.parse(junit).getroot().iter("testcase"))
        assert len(cases) >= 18, [c.get("name") for c in cases]
        # the installed copy ran, not this checkout's
        listed = _run([sys.executable, "-m", "pytest", "--pyargs", "cnilab_scenarios",
                       "--lab-config", "lab.toml", "-p", "no:cacheprovider", "--co", "-q",
                       "--rootdir", "/"],                # node ids as full paths
                      cwd=other, env=env)
        assert f"{site}/cnilab_scenarios/test_same_node.py".lstrip("/") in listed.stdout, \
            listed.stdout[-2000:]
        assert str(REPO / "scenarios").lstrip("/") not in listed.stdout
    finally:
        down = _run([*lab, "down"], cwd=other, env=env)
        assert down.returncode == 0, down.stderr
