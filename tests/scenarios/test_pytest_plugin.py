"""The pytest plugin: options exist without a lab, and a lab that is not up says what to do."""
from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_options_are_registered(pytestconfig):
    assert pytestconfig.getoption("--lab-config") == "lab.toml"
    assert pytestconfig.getoption("--lab-name") is None


def test_scenarios_against_a_lab_that_is_not_up_say_run_lab_up(tmp_path):
    name = f"t4{secrets.token_hex(3)}"   # never brought up
    junit = tmp_path / "r.xml"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "scenarios/test_same_node.py",
         "--lab-config", "examples/netns-ptp.toml", "--lab-name", name, f"--junitxml={junit}",
         "-q"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    out = res.stdout + res.stderr
    # the hint keeps --name (a user copying it brings up the lab they asked for), once
    hint = f"lab {name} is not up: run `lab up -c examples/netns-ptp.toml --name {name}` first"
    assert out.count(hint) == 1, out
    assert "Traceback" not in out
    assert junit.exists()


def test_a_missing_config_is_a_clear_error(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "scenarios/test_same_node.py",
         "--lab-config", str(tmp_path / "nope.toml"), "-q", "-x"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    said = res.stdout + res.stderr       # one line before any test runs, naming the file
    assert "no lab config at" in said and "nope.toml" in said and "--lab-config" in said
    assert "Traceback" not in said
