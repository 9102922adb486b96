"""GC removes every attachment of the network the runtime did not list, and only those."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from cnitest import host_local_conf, leases, links, run_plugin

from plugin.cni.wiring import host_veth_name

pytestmark = pytest.mark.root


def leak_a_lease(ipam_dir, container_id: str, subnet: str = "10.250.40.0/24") -> str:
    """An allocation with no interface, as a crashed runtime leaves it."""
    conf = host_local_conf(ipam_dir, subnet, version="1.0.0")
    p = subprocess.run(["/usr/lib/cni/host-local"], input=json.dumps(conf).encode(),
                       capture_output=True, check=True,
                       env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": container_id,
                            "CNI_NETNS": "/nonexistent", "CNI_IFNAME": "eth0",
                            "CNI_PATH": "/usr/lib/cni"})
    return json.loads(p.stdout)["ips"][0]["address"].split("/")[0]


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_removes_leaked_and_keeps_listed(key, node_ns, make_netns, ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.40.0/24")
    results = {}
    for cid in ("keep", "drop1", "drop2"):
        add = run_plugin(node_ns, "ADD", conf, netns=make_netns("pod"), container_id=cid)
        assert add.returncode == 0, add
        results[cid] = add.json
    orphan_ip = leak_a_lease(ipam_dir, "orphan")
    # another network's attachment on the same node must survive our GC
    other = host_local_conf(ipam_dir, "10.250.41.0/24", name="cnp1other")
    assert run_plugin(node_ns, "ADD", other, netns=make_netns("pod"),
                      container_id="drop1").returncode == 0

    gc = run_plugin(node_ns, "GC", dict(conf, **{key: [{"containerID": "keep",
                                                        "ifname": "eth0"}]}))
    assert gc.returncode == 0 and gc.stdout == "", gc

    kept_ip = results["keep"]["ips"][0]["address"].split("/")[0]
    assert leases(ipam_dir, "cnp1net") == [kept_ip]
    assert orphan_ip not in leases(ipam_dir, "cnp1net")
    assert set(links(node_ns)) == {"lo", host_veth_name("cnp1net", "keep", "eth0"),
                                   host_veth_name("cnp1other", "drop1", "eth0")}
    assert len(leases(ipam_dir, "cnp1other")) == 1
    pod = results["keep"]["interfaces"][1]["sandbox"]
    check = run_plugin(node_ns, "CHECK", dict(conf, prevResult=results["keep"]), netns=pod,
                       container_id="keep")
    assert check.returncode == 0, check
    # GC is repeatable
    again = run_plugin(node_ns, "GC", dict(conf, **{key: [{"containerID": "keep",
                                                           "ifname": "eth0"}]}))
    assert again.returncode == 0, again


def test_gc_with_empty_list_removes_everything_of_the_network(node_ns, pod_ns, ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.42.0/24")
    assert run_plugin(node_ns, "ADD", conf, netns=pod_ns).returncode == 0
    gc = run_plugin(node_ns, "GC", dict(conf, **{"cni.dev/valid-attachments": []}))
    assert gc.returncode == 0, gc
    assert links(node_ns) == ["lo"] and links(pod_ns) == ["lo"]
    assert leases(ipam_dir, "cnp1net") == []


def test_gc_keeps_going_and_reports_failures(node_ns, pod_ns, ipam_dir, tmp_path):
    """IPAM refuses to release one stale lease: GC still removes the other stale attachment
    and reports the failure with code 105. The IPAM is host-local behind a wrapper that fails
    DEL for one container (CNI_PATH points at the wrapper)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "host-local"
    wrapper.write_text("#!/bin/sh\n"
                       'if [ "$CNI_COMMAND" = DEL ] && [ "$CNI_CONTAINERID" = broken ]; then\n'
                       '  echo \'{"code": 11, "msg": "lease store busy"}\'; exit 1\n'
                       "fi\n"
                       "exec /usr/lib/cni/host-local\n")
    wrapper.chmod(0o755)
    conf = host_local_conf(ipam_dir, "10.250.43.0/24")
    broken_ip = leak_a_lease(ipam_dir, "broken", "10.250.43.0/24")
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns, container_id="stale",
                     path=str(bin_dir))
    assert add.returncode == 0, add

    gc = run_plugin(node_ns, "GC", dict(conf, **{"cni.dev/valid-attachments": []}),
                    path=str(bin_dir))
    assert gc.returncode == 1 and gc.json["code"] == 105, gc
    assert "broken" in gc.json["msg"] and "lease store busy" in gc.json["details"]
    assert links(node_ns) == ["lo"] and links(pod_ns) == ["lo"]
    assert leases(ipam_dir, "cnp1net") == [broken_ip]


def test_gc_touches_only_real_lease_files(node_ns, pod_ns, ipam_dir):
    """Whatever else sits in the network's directory stays, and no IPAM DEL runs for it."""
    conf = host_local_conf(ipam_dir, "10.250.44.0/24")
    add = run_plugin(node_ns, "ADD", conf, netns=pod_ns, container_id="stale")
    assert add.returncode == 0, add
    d = ipam_dir / "cnp1net"
    others = {
        "notes.txt": "line1",                       # one line, like a pre-1.0 lease
        "README": "line1\r\nline2\r\nline3",        # three lines: was DEL for "line1"
        "10.250.44.200": "line1\r\nline2\r\nline3",  # an IP's name, not a lease's content
        "10.250.44.201": "bad id!\r\neth0",          # not a container ID
        "10.250.044.202": "c9",                      # not the name host-local writes
        "10.250.44.203": "x" * 2000,                 # too big for a lease
    }
    for name, text in others.items():
        (d / name).write_text(text)
    (d / "10.250.44.204").symlink_to(d / "notes.txt")  # never followed
    gc = run_plugin(node_ns, "GC", dict(conf, **{"cni.dev/valid-attachments": []}),
                    timeout=30)
    assert gc.returncode == 0, gc
    assert "line1" not in gc.stderr, gc.stderr
    assert sorted(p.name for p in d.iterdir()) == sorted(
        [*others, "10.250.44.204", "lock", "last_reserved_ip.0"])
    assert all((d / name).read_bytes() == text.encode() for name, text in others.items())
    assert links(node_ns) == ["lo"] and links(pod_ns) == ["lo"]
    # A FIFO is never opened to block on (host-local itself would: nothing is stale now,
    # so no IPAM DEL runs).
    os.mkfifo(d / "10.250.44.205")
    again = run_plugin(node_ns, "GC", dict(conf, **{"cni.dev/valid-attachments": []}),
                       timeout=30)
    assert again.returncode == 0, again


def test_gc_leaves_a_directory_host_local_never_made(node_ns, tmp_path):
    """A wrong dataDir: a directory of one-line files, but no host-local lock file."""
    data = tmp_path / "wrong"
    (data / "cnp1net").mkdir(parents=True)
    (data / "cnp1net" / "10.250.45.9").write_text("somebody")
    conf = host_local_conf(data, "10.250.45.0/24")
    gc = run_plugin(node_ns, "GC", dict(conf, **{"cni.dev/valid-attachments": []}))
    assert gc.returncode == 0, gc
    assert (data / "cnp1net" / "10.250.45.9").read_text() == "somebody"
