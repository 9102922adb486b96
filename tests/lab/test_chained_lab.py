"""A chained network on a real netns lab: our plugin, then Debian's tuning, portmap (and
bandwidth); `lab pod add`'s CNI_ARGS and capability arguments reach the plugins that declare
them and take effect; the scenario group `chained` judges what the chain claims."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cli import main

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "netns-chained.toml"
BANDWIDTH = """
[[plugin.chain]]
type = "bandwidth"
[plugin.chain.config]
capabilities = { bandwidth = true }
"""


def _need_build() -> None:
    if not (REPO / "dist" / "cnilab").exists():
        pytest.skip("dist/cnilab is not built (python -m plugin.build)")


@pytest.fixture
def chained_lab(tmp_path) -> Iterator[list[str]]:
    """The example's lab under a name of its own; `lab down` whatever happened."""
    _need_build()
    cfg = ["-c", str(EXAMPLE), "--name", "t6" + secrets.token_hex(3)]
    try:
        assert main([*cfg, "up"]) == 0
        yield cfg
    finally:
        main([*cfg, "down"])


def _node_run(cfg: list[str], capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main([*cfg, "exec", "node1", "--", *argv]) == 0
    return capsys.readouterr().out


def test_runtime_arguments_reach_the_plugins_that_declare_them(chained_lab, capsys):
    cfg = chained_lab
    mac = "02:00:00:00:00:42"
    assert main([*cfg, "pod", "add", "node1", "web", "--ip", "10.244.0.50", "--mac", mac,
                 "--port", "18080:80/tcp", "--cni-args", "CNILAB_TEST=1"]) == 0
    assert capsys.readouterr().out.split()[3] == "10.244.0.50"   # ips: ours -> host-local
    assert main([*cfg, "pod", "exec", "web", "--", "cat", "/sys/class/net/eth0/address"]) == 0
    assert capsys.readouterr().out.strip() == mac                # mac: tuning
    nat = _node_run(cfg, capsys, "iptables-save", "-t", "nat")
    assert "--to-destination 10.244.0.50:80" in nat and "--dport 18080" in nat   # portmap
    sysctl = ["pod", "exec", "web", "--", "sysctl", "-n", "net.ipv4.conf.eth0.accept_redirects"]
    assert main([*cfg, *sysctl]) == 0 and capsys.readouterr().out.strip() == "0"  # tuning

    # what each plugin is given: only its declared capabilities, from the cache for CHECK
    assert main([*cfg, "cni", "show", "web"]) == 0
    script = capsys.readouterr().out
    stdins = [json.loads(line) for line in script.splitlines() if line.startswith("{")]
    assert [s["type"] for s in stdins] == ["cnilab", "tuning", "portmap"]
    assert [s.get("runtimeConfig") for s in stdins] == [
        {"ips": ["10.244.0.50"]}, {"mac": mac},
        {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}]
    assert all(s["prevResult"]["ips"][0]["address"] == "10.244.0.50/24" for s in stdins)
    assert "CNILAB_TEST=1'" in script                             # CNI_ARGS, after ours

    # CNI_ARGS alone: host-local's IP= (IgnoreUnknown is the runtime's own first pair)
    assert main([*cfg, "pod", "add", "node1", "pinned", "--cni-args", "IP=10.244.0.60"]) == 0
    assert capsys.readouterr().out.split()[3] == "10.244.0.60"
    assert main([*cfg, "cni", "check", "pinned"]) == 0           # CHECK through the chain

    assert main([*cfg, "pod", "del", "web"]) == 0                 # DEL in reverse: portmap too
    assert "10.244.0.50" not in _node_run(cfg, capsys, "iptables-save", "-t", "nat")
    assert main([*cfg, "pod", "del", "pinned"]) == 0


def test_pod_add_with_options_on_a_lab_not_up_is_one_clear_line(tmp_path, capsys):
    _need_build()
    cfg = ["-c", str(EXAMPLE), "--name", "t6" + secrets.token_hex(3)]
    assert main([*cfg, "pod", "add", "node1", "web", "--mac", "02:00:00:00:00:01"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") <= 3 and "Traceback" not in err and err.startswith("✗")


def test_the_chained_scenarios_judge_tuning_bandwidth_and_portmap(tmp_path):
    _need_build()
    name = "t6" + secrets.token_hex(3)
    config = tmp_path / "lab.toml"
    config.write_text(EXAMPLE.read_text().replace('path = "dist/cnilab"',
                                                  f'path = "{REPO / "dist" / "cnilab"}"')
                      + BANDWIDTH)
    common = ["-c", str(config), "--name", name]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    lab = [sys.executable, "-c", "from lab.cli import main_entry; main_entry()"]
    try:
        up = subprocess.run([*lab, "up", *common], cwd=REPO, capture_output=True, text=True,
                            timeout=180, env=env)
        assert up.returncode == 0, up.stderr[-2000:]
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "scenarios/test_chained.py",
             "--lab-config", str(config), "--lab-name", name, "-q", "-rs",
             "-o", "addopts=--strict-markers"],
            cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
        assert suite.returncode == 0 and "4 passed" in suite.stdout, suite.stdout[-3000:]
    finally:
        subprocess.run([*lab, "down", *common], cwd=REPO, capture_output=True, timeout=120,
                       env=env)
