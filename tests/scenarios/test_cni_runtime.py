"""The libcni-like runtime against the real reference ptp + host-local in real namespaces."""
from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lab.api import LabError
from lab.runtime.cni_runtime import CniCallError, CniRuntime, plugin_configs

pytestmark = pytest.mark.root


@pytest.fixture
def pod_netns() -> Iterator[str]:
    name = f"cns4-{secrets.token_hex(3)}-pod"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_add_caches_result_in_libcni_layout_and_del_removes_it(two_nodes, ptp_spec, pod_netns):
    node = two_nodes[0]
    rt = CniRuntime(node, ptp_spec)
    result = rt.add("cid1", f"/run/netns/{pod_netns}")
    assert result["ips"][0]["address"].startswith("10.251.1.")

    cache = Path(node.state_dir) / "results" / "t4net-cid1-eth0"
    doc = json.loads(cache.read_text())
    assert doc["kind"] == "cniCacheV1"
    assert (doc["containerId"], doc["ifName"], doc["networkName"]) == ("cid1", "eth0", "t4net")
    assert doc["netns"] == f"/run/netns/{pod_netns}"
    assert json.loads(base64.b64decode(doc["config"]))["type"] == "ptp"
    assert doc["result"] == result
    assert [c.container_id for c in rt.cached_attachments()] == ["cid1"]

    lease_dir = Path(node.state_dir) / "ipam" / "t4net"
    ip = result["ips"][0]["address"].split("/")[0]
    assert (lease_dir / ip).read_text().startswith("cid1")

    rt.check("cid1")
    rt.delete("cid1")
    assert not cache.exists()
    assert not (lease_dir / ip).exists()
    rt.delete("cid1")  # DEL twice: no cache, no prevResult, still fine


def test_check_reports_the_plugins_error_after_tampering(two_nodes, ptp_spec, pod_netns):
    rt = CniRuntime(two_nodes[0], ptp_spec)
    result = rt.add("cid2", f"/run/netns/{pod_netns}")
    try:
        address = result["ips"][0]["address"]
        subprocess.run(["ip", "-n", pod_netns, "addr", "del", address, "dev", "eth0"], check=True)
        with pytest.raises(CniCallError) as err:
            rt.check("cid2")
        assert err.value.command == "CHECK"
        assert err.value.node == "node1"
        assert err.value.msg
        assert "CNI CHECK failed" in err.value.describe()
    finally:
        rt.delete("cid2")


def test_check_without_cached_result_says_unknown_container(two_nodes, ptp_spec):
    rt = CniRuntime(two_nodes[0], ptp_spec)
    with pytest.raises(CniCallError) as err:
        rt.check("never-added")
    assert err.value.code == 3
    assert "no cached ADD result" in err.value.msg


def test_plugin_error_json_becomes_cni_call_error(two_nodes, ptp_spec, pod_netns):
    bad = dict(ptp_spec.configs["node1"])
    bad["ipam"] = {"type": "host-local"}  # no ranges: host-local refuses the config
    spec = replace(ptp_spec, configs={**ptp_spec.configs, "node1": bad})
    with pytest.raises(CniCallError) as err:
        CniRuntime(two_nodes[0], spec).add("cid3", f"/run/netns/{pod_netns}")
    assert err.value.command == "ADD"
    assert err.value.code is not None and err.value.msg


def test_missing_plugin_is_a_clear_lab_error(two_nodes, ptp_spec, pod_netns):
    cfg = {**ptp_spec.configs["node1"], "type": "no-such-cni"}
    spec = replace(ptp_spec, configs={**ptp_spec.configs, "node1": cfg})
    with pytest.raises(LabError, match="'no-such-cni' not found on CNI_PATH"):
        CniRuntime(two_nodes[0], spec).add("cid4", f"/run/netns/{pod_netns}")


def test_gc_is_skipped_for_configs_before_1_1_0(two_nodes, ptp_spec):
    assert "predates 1.1.0" in CniRuntime(two_nodes[0], ptp_spec).gc()


def _recording_plugin(tmp_path: Path) -> Path:
    """A plugin that writes down what the runtime handed it: env and stdin."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    plugin = bindir / "recorder"
    plugin.write_text(f"""#!/bin/sh
env > {tmp_path}/env.$CNI_COMMAND
cat > {tmp_path}/stdin.$CNI_COMMAND
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{{"cniVersion":"1.1.0","interfaces":[{{"name":"eth0","sandbox":"'$CNI_NETNS'"}}],
        "ips":[{{"address":"10.9.9.9/24","interface":0}}]}}'
fi
if [ "$CNI_COMMAND" = STATUS ]; then
  echo '{{"cniVersion":"1.1.0","code":50,"msg":"not ready","details":"no peers"}}'; exit 1
fi
exit 0
""")
    plugin.chmod(0o755)
    return bindir


def test_runtime_gives_a_minimal_env_and_sends_gc_the_cached_attachments(
        two_nodes, ptp_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTUAL_ENV", "/should/not/leak")
    bindir = _recording_plugin(tmp_path)
    conf = {"cniVersion": "1.1.0", "name": "t4net", "type": "recorder"}
    spec = replace(ptp_spec, plugin_type="recorder", cni_path=f"/nonexistent:{bindir}",
                   configs={"node1": conf, "node2": conf})
    rt = CniRuntime(two_nodes[0], spec)
    rt.add("live1", "/run/netns/x", cni_args="K8S_POD_NAME=a")
    env = dict(line.split("=", 1) for line in (tmp_path / "env.ADD").read_text().splitlines())
    assert env["CNI_COMMAND"] == "ADD" and env["CNI_CONTAINERID"] == "live1"
    assert env["CNI_NETNS"] == "/run/netns/x" and env["CNI_IFNAME"] == "eth0"
    assert env["CNI_ARGS"] == "K8S_POD_NAME=a" and env["CNI_PATH"] == spec.cni_path
    assert "VIRTUAL_ENV" not in env and ".venv" not in env["PATH"]

    rt.check("live1")
    check_in = json.loads((tmp_path / "stdin.CHECK").read_text())
    assert check_in["prevResult"]["ips"][0]["address"] == "10.9.9.9/24"

    assert rt.gc() == ""
    gc_in = json.loads((tmp_path / "stdin.GC").read_text())
    valid = [{"containerID": "live1", "ifname": "eth0"}]
    assert gc_in["cni.dev/valid-attachments"] == valid
    assert gc_in["cni.dev/attachments"] == valid

    with pytest.raises(CniCallError) as err:
        rt.status()
    assert (err.value.code, err.value.msg, err.value.details) == (50, "not ready", "no peers")

    rt.delete("live1")
    del_in = json.loads((tmp_path / "stdin.DEL").read_text())
    assert del_in["prevResult"]["ips"][0]["address"] == "10.9.9.9/24"
    assert rt.cached_attachments() == []


def test_conflist_plugins_get_the_list_name_and_version():
    confs = plugin_configs({"cniVersion": "1.0.0", "name": "n",
                            "plugins": [{"type": "ptp"}, {"type": "tuning"}]})
    assert confs == [{"type": "ptp", "name": "n", "cniVersion": "1.0.0"},
                     {"type": "tuning", "name": "n", "cniVersion": "1.0.0"}]
