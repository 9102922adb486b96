"""The netns provider on real namespaces: idempotent up, converging re-runs, complete down,
labs side by side. Every lab here is named t3<random> and removed in a finally."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from lab.api import LabError
from lab.cluster import actions
from lab.cluster.logs import write_tarball
from lab.config import parse_config
from lab.nodes.providers.netns import HOST_ROOT, NetnsProvider, lab_namespaces, switch_port

pytestmark = pytest.mark.root


def lab_config(tmp_path: Path, name: str, nodes=("node1", "node2", "node3"), plugin="/bin/true"):
    return parse_config({
        "lab": {"name": name, "state_dir": str(tmp_path / f"state-{name}")},
        "nodes": [{"name": n} for n in nodes],
        "network": {"underlay": "10.99.0.0/24", "pod_cidr": "10.244.0.0/16"},
        "plugin": {"path": plugin, "type": "cnilab"},
    })


@pytest.fixture
def make_lab(tmp_path):
    """Returns (config, provider) for fresh labs; destroys every one of them afterwards."""
    made: list[NetnsProvider] = []

    def make(nodes=("node1", "node2", "node3"), name=None, plugin="/bin/true"):
        config = lab_config(tmp_path, name or "t3" + secrets.token_hex(3), nodes, plugin)
        provider = NetnsProvider(config)
        made.append(provider)
        return config, provider

    try:
        yield make
    finally:
        for provider in made:
            provider.destroy()
            assert lab_namespaces(provider.lab) == []


def ip_json(ns: str, *args: str):
    out = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out or "[]")


def snapshot(lab: str):
    """Everything about a lab's namespaces that a second `up` must not change (operstate is
    left out: the kernel settles a new bridge's carrier asynchronously)."""
    def links(ns):
        return [(li["ifindex"], li["ifname"], li.get("address"), li.get("master"), li["mtu"],
                 sorted(set(li["flags"]) - {"LOWER_UP"})) for li in ip_json(ns, "link", "show")]

    def addrs(ns):
        return [(i["ifname"], a["local"], a["prefixlen"])
                for i in ip_json(ns, "addr", "show") for a in i.get("addr_info", [])]

    return {ns: (links(ns), addrs(ns)) for ns in lab_namespaces(lab)}


def host_links():
    return sorted(link["ifname"] for link in json.loads(subprocess.run(
        ["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout))


def test_up_makes_nodes_on_a_switch_without_touching_the_host(make_lab):
    config, provider = make_lab()
    before = host_links()
    nodes = provider.provision()
    assert host_links() == before
    lab = config.name
    assert lab_namespaces(lab) == sorted(f"cnilab-{lab}-{n}" for n in ("node1", "node2", "node3",
                                                                        "sw"))
    assert [(n.name, n.address) for n in nodes] == [
        ("node1", "10.99.0.11"), ("node2", "10.99.0.12"), ("node3", "10.99.0.13")]
    node2 = nodes[1]
    assert node2.state_dir == f"/var/lib/cnilab/{lab}/node2" and Path(node2.state_dir).is_dir()
    assert node2.testinfra_url == f"netns://cnilab-{lab}-node2"
    assert node2.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    assert node2.run(["ping", "-c1", "-W2", "127.0.0.1"]).ok      # lo up
    for peer in ("10.99.0.11", "10.99.0.13"):
        assert node2.run(["ping", "-c1", "-W2", peer]).ok, peer
    ports = {link["ifname"] for link in ip_json(f"cnilab-{lab}-sw", "link", "show")}
    assert {"br0", "v-node1", "v-node2", "v-node3"} <= ports
    # nodes() finds the same nodes from the namespaces alone
    assert [(n.name, n.address) for n in provider.nodes()] == [(n.name, n.address) for n in nodes]


def test_up_twice_changes_nothing(make_lab):
    config, provider = make_lab()
    provider.provision()
    first = snapshot(config.name)
    provider.provision()
    assert snapshot(config.name) == first


def test_interrupted_up_converges(make_lab):
    config, provider = make_lab()
    lab = config.name
    # what an up killed early leaves: the switch namespace bare, one node without its link,
    # another node complete, the third never made
    subprocess.run(["ip", "netns", "add", f"cnilab-{lab}-sw"], check=True)
    subprocess.run(["ip", "netns", "add", f"cnilab-{lab}-node1"], check=True)
    nodes = provider.provision()
    assert len(nodes) == 3
    for node in nodes:
        assert node.run(["ping", "-c1", "-W2", "10.99.0.13" if node.name != "node3"
                         else "10.99.0.11"]).ok
    # a node whose address vanished gets it back; a removed node comes back
    subprocess.run(["ip", "-n", f"cnilab-{lab}-node2", "addr", "flush", "dev", "eth0"], check=True)
    subprocess.run(["ip", "netns", "del", f"cnilab-{lab}-node3"], check=True)
    assert [s.state for s in provider.status()] == ["running", "degraded", "missing"]
    nodes = provider.provision()
    assert [s.state for s in provider.status()] == ["running", "running", "running"]
    assert nodes[1].run(["ping", "-c1", "-W2", "10.99.0.13"]).ok


def test_down_after_partial_up_removes_everything_the_lab_made(make_lab):
    config, provider = make_lab()
    lab = config.name
    subprocess.run(["ip", "netns", "add", f"cnilab-{lab}-sw"], check=True)
    subprocess.run(["ip", "netns", "add", f"cnilab-{lab}-node2"], check=True)
    subprocess.run(["ip", "netns", "add", f"cnilab-{lab}-pod-a"], check=True)
    # a process left in a namespace (a resident plugin, an iperf3 server) must not keep it alive
    sleeper = subprocess.Popen(["ip", "netns", "exec", f"cnilab-{lab}-node2", "sleep", "300"])
    (HOST_ROOT / lab / "node2").mkdir(parents=True, exist_ok=True)
    try:
        time.sleep(0.2)
        provider.destroy()
        assert lab_namespaces(lab) == []
        assert not (HOST_ROOT / lab).exists()
        assert sleeper.wait(timeout=5) != 0
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    provider.destroy()      # twice is fine


def test_two_labs_side_by_side(make_lab):
    config_a, lab_a = make_lab(nodes=("node1", "node2"))
    # a name that starts with the other's: resource names must still not be confused
    config_b, lab_b = make_lab(nodes=("node1", "node2"), name=config_a.name + "_b")
    lab_a.provision()
    nodes_b = lab_b.provision()
    # same underlay subnet in both: separate switches keep them apart
    assert len(lab_namespaces(config_a.name)) == 3 and len(lab_namespaces(config_b.name)) == 3
    lab_a.destroy()
    assert lab_namespaces(config_a.name) == []
    assert [s.state for s in lab_b.status()] == ["running", "running"]
    assert nodes_b[0].run(["ping", "-c1", "-W2", "10.99.0.12"]).ok


def test_node_run_result_timeout_env_and_put_file(make_lab, tmp_path):
    _, provider = make_lab(nodes=("node1",))
    node = provider.provision()[0]
    res = node.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.rc, res.stdout, res.stderr) == (3, "out\n", "err\n")
    assert res.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")
    assert node.run(["sh", "-c", "echo $CNI_COMMAND"], env={"CNI_COMMAND": "ADD"}).stdout == "ADD\n"
    assert node.run(["cat"], input="stdin").stdout == "stdin"
    slow = node.run(["sleep", "5"], timeout=0.3)
    assert slow.rc == 124 and "timed out" in slow.stderr
    with pytest.raises(LabError) as info:
        node.run(["false"]).check(node.name)
    assert "node1" in info.value.describe()
    src = tmp_path / "plugin"
    src.write_text("#!/bin/sh\necho hi\n")
    node.put_file(src, f"{node.state_dir}/bin/myplugin")
    assert node.run([f"{node.state_dir}/bin/myplugin"]).stdout == "hi\n"
    assert os.stat(f"{node.state_dir}/bin/myplugin").st_mode & 0o777 == 0o755


def test_pod_namespace_made_on_a_node_is_usable_from_the_host(make_lab):
    """A runtime on the node makes pod namespaces with `ip netns add`: they must be real mounts
    the host (and the plugin) can enter, and `down` must remove them."""
    config, provider = make_lab(nodes=("node1",))
    node = provider.provision()[0]
    pod = f"cnilab-{config.name}-pod-p1"
    assert node.run(["ip", "netns", "add", pod]).ok
    assert subprocess.run(["ip", "netns", "exec", pod, "true"]).returncode == 0
    provider.destroy()
    assert pod not in lab_namespaces(config.name)


def test_long_node_names_get_a_stable_switch_port(make_lab):
    long_name = "a-rather-long-node-name-1"
    assert len(switch_port(long_name)) <= 15 and switch_port(long_name) == switch_port(long_name)
    _, provider = make_lab(nodes=(long_name, "n2"))
    nodes = provider.provision()
    assert nodes[0].run(["ping", "-c1", "-W2", "10.99.0.12"]).ok


def test_logs_tarball_has_each_nodes_state(make_lab, tmp_path):
    config, provider = make_lab(nodes=("node1", "node2"))
    provider.provision()
    leases = HOST_ROOT / config.name / "node1" / "ipam" / "cnilab"
    leases.mkdir(parents=True)
    (leases / "10.244.0.2").write_text("abc\r\neth0")
    path = write_tarball(provider, config.name, tmp_path / "out.tar.gz")
    with tarfile.open(path) as tar:
        names = tar.getnames()
        root = f"cnilab-{config.name}-logs"
        assert f"{root}/node1/ip-addr.txt" in names and f"{root}/node2/ip-route.txt" in names
        assert f"{root}/node1/state/ipam/cnilab/10.244.0.2" in names
        assert f"{root}/sw/links.txt" in names
        addr = tar.extractfile(f"{root}/node1/ip-addr.txt").read().decode()
    assert "10.99.0.11/24" in addr


def test_up_action_installs_plugin_and_is_idempotent(make_lab, tmp_path):
    plugin = tmp_path / "myplugin"      # answers VERSION (lab up asks), whatever it is asked
    plugin.write_text("#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\", "
                      "\"supportedVersions\":[\"1.0.0\",\"1.1.0\"]}'\n")
    plugin.chmod(0o755)
    config, provider = make_lab(nodes=("node1", "node2"), plugin=str(plugin))
    nodes = actions.up(config, provider=provider)
    actions.up(config, provider=provider)
    for node in nodes:
        assert node.run([f"{node.state_dir}/bin/cnilab"]).stdout.startswith('{"cniVersion"')
    actions.down(config, provider=provider)
    assert lab_namespaces(config.name) == []
    assert not config.harness_dir.exists()


def test_failed_up_collects_logs_then_cleans_up_unless_retained(make_lab, tmp_path):
    broken = tmp_path / "broken"      # installs fine, then answers VERSION with nothing
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    config, provider = make_lab(nodes=("node1",), plugin=str(broken))
    with pytest.raises(LabError) as info:
        actions.up(config, provider=provider)
    assert "the plugin gave no VERSION answer (rc=3)" in info.value.describe()
    assert lab_namespaces(config.name) == []
    assert list((config.harness_dir / "logs").glob("up-failed-*.tar.gz"))
    with pytest.raises(LabError):
        actions.up(config, provider=provider, retain=True)
    assert len(lab_namespaces(config.name)) == 2


def _stand_in_helper(tmp_path: Path) -> Path:
    """A plugin that, like ours, leaves a resident process holding its own file open (fd 9),
    here in a network namespace of its own that has no name (as a helper left in a node
    namespace a failed up deleted is), then answers VERSION."""
    plugin = tmp_path / "helperplugin"
    plugin.write_text(
        "#!/bin/sh\n"
        "( exec 9<\"$0\"; exec unshare --net sleep 600 ) >/dev/null 2>&1 </dev/null &\n"
        "echo '{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.0.0\",\"1.1.0\"]}'\n")
    plugin.chmod(0o755)
    return plugin


def test_down_stops_every_helper_the_labs_plugin_started(make_lab, tmp_path):
    """`lab up; lab up; lab down` (and a failed up) leave no process of the lab's plugin,
    wherever it runs: the first up's helper too, and one in a namespace already gone."""
    from lab.nodes.providers.netns import holders_of

    config, provider = make_lab(nodes=("node1", "node2"), plugin=str(_stand_in_helper(tmp_path)))
    actions.up(config, provider=provider)
    actions.up(config, provider=provider)
    assert holders_of(provider.host_root), "the stand-in plugin started no helper"
    actions.down(config, provider=provider)
    deadline = time.monotonic() + 5
    while holders_of(provider.host_root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert holders_of(provider.host_root) == []


def test_files_put_while_other_threads_run_commands_can_be_executed_at_once(tmp_path):
    """`lab up` copies a hook to each node and runs it there, all nodes at once (node_setup,
    a deploy): a copy must never leave its write descriptor in another thread's child, or
    running the fresh file fails with "Text file busy" (ETXTBSY), as a CI run did."""
    from concurrent.futures import ThreadPoolExecutor

    from lab.nodes.providers.netns import NetnsNode

    node = NetnsNode("node1", "10.99.0.11", str(tmp_path), "unused")
    script = tmp_path / "hook"
    script.write_bytes(b"#!/bin/sh\nexit 0\n" + b"# padding\n" * 20_000)  # a copy takes a while

    def put_and_run(i: int) -> str:
        target = tmp_path / f"node{i % 8}" / f"hook{i}"
        node.put_file(script, str(target))
        try:
            done = subprocess.run([str(target)], capture_output=True, text=True, check=False)
        except OSError as e:
            return str(e)
        return "" if done.returncode == 0 else done.stderr or f"rc {done.returncode}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        failed = [why for why in pool.map(put_and_run, range(400)) if why]
    assert not failed, f"{len(failed)} of 400 failed, e.g. {failed[0]}"
