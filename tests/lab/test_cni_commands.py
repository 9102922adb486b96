"""`lab pod` and `lab cni`: the seed's manual CHECK walk-through on a netns lab, by hand, as a
cnitool user does it — and the `show` reproducer run as printed."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lab.cli import main
from lab.cli.cni import reproducer
from lab.nodes.providers.netns import lab_namespaces

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_reproducer_is_copy_paste_shell():
    calls = [(["env", "-i", "CNI_COMMAND=CHECK", "CNI_ARGS=K8S_POD_NAME=a;X=1",
               "/opt/cni/bin/cnilab"], '{"cniVersion": "1.1.0"}')]
    text = reproducer(calls, command="CHECK", pod="a", node="n1",
                      lab_argv=["lab", "-c", "/x/lab.toml"])
    assert text.splitlines() == [
        "# CNI CHECK of pod a on n1, as the runtime makes it (1 plugin call):",
        "lab -c /x/lab.toml exec n1 -- env -i CNI_COMMAND=CHECK 'CNI_ARGS=K8S_POD_NAME=a;X=1' "
        "/opt/cni/bin/cnilab <<'CNI_STDIN'",
        '{"cniVersion": "1.1.0"}',
        "CNI_STDIN"]


@pytest.mark.root
def test_manual_check_walk_through(tmp_path, capsys):
    plugin = REPO / "dist" / "cnilab"
    if not plugin.exists():
        pytest.skip("dist/cnilab is not built (python -m plugin.build)")
    name = "t3" + secrets.token_hex(3)
    cfg = ["-c", str(REPO / "examples" / "netns-hostgw.toml"), "--name", name]
    try:
        assert main([*cfg, "up"]) == 0
        assert main([*cfg, "pod", "add", "node1", "web"]) == 0
        web = capsys.readouterr().out.split()
        assert web[:3] == ["web", "node1", "eth0"]
        assert main([*cfg, "pod", "ls", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(p["name"], p["ip"]) for p in listed] == [("web", web[3])]

        assert main([*cfg, "cni", "check", "web"]) == 0           # healthy: CHECK passes
        logs = tmp_path / "logs.tar.gz"
        assert main([*cfg, "logs", "-o", str(logs)]) == 0
        with tarfile.open(logs) as tar:                          # the pod's own namespace
            pod_addr = tar.extractfile(f"cnilab-{name}-logs/node1/pods/cnilab-{name}-pod-web/"
                                       "ip-addr.txt")
            assert pod_addr is not None and f"{web[3]}/24" in pod_addr.read().decode()
        assert main([*cfg, "cni", "show", "web"]) == 0
        script = capsys.readouterr().out
        assert "CNI_COMMAND=CHECK" in script and '"prevResult"' in script
        # the reproducer runs as is, without the venv on PATH (as under sudo or env -i)
        env = {"PATH": "/usr/bin:/bin"}
        ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env,
                             timeout=60, cwd="/")
        assert ran.returncode == 0, ran.stdout + ran.stderr

        pod_ns = f"cnilab-{name}-pod-web"
        subprocess.run(["ip", "netns", "exec", pod_ns, "ip", "addr", "flush", "dev", "eth0"],
                       check=True)
        assert main([*cfg, "cni", "check", "web"]) == 1           # tampered: CHECK fails
        captured = capsys.readouterr()
        error = json.loads(captured.out)
        assert error["code"] >= 100 and web[3] in error["msg"], error
        ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env,
                             timeout=60, cwd="/")
        assert ran.returncode != 0 and json.loads(ran.stdout)["code"] == error["code"]

        assert main([*cfg, "cni", "add", "web", "--node", "node2"]) == 1   # not its node
        assert "pod web is on node1, not node2" in capsys.readouterr().err
        assert main([*cfg, "cni", "del", "web"]) == 0
        capsys.readouterr()
        for again in (["cni", "add", "web"], ["pod", "del", "web"]):   # DELeted: --node needed
            assert main([*cfg, *again]) == 1
            err = capsys.readouterr().err
            assert "its namespace is still there" in err and "--node" in err, err
        assert main([*cfg, "cni", "add", "web", "--node", "node1"]) == 0
        capsys.readouterr()
        assert main([*cfg, "cni", "check", "web"]) == 0           # re-attached, healthy
        assert main([*cfg, "cni", "gc", "node1"]) == 0
        assert main([*cfg, "cni", "status", "node1"]) == 0
        for command in ("GC", "STATUS"):
            capsys.readouterr()
            assert main([*cfg, "cni", "show", "node1", "--command", command]) == 0
            script = capsys.readouterr().out
            assert f"# CNI {command} on node1" in script and f"CNI_COMMAND={command}" in script
            assert ('"cni.dev/valid-attachments"' in script) == (command == "GC")
            ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                                 env={"PATH": "/usr/bin:/bin"}, timeout=60, cwd="/")
            assert ran.returncode == 0, ran.stdout + ran.stderr
        capsys.readouterr()
        assert main([*cfg, "pod", "ls"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["NAME", "NODE", "IFNAME", "ADDRESSES", "CONTAINER_ID"]
        assert lines[1].split()[:3] == web[:3] and lines[1].split()[3].startswith("10.244.0.")
        assert main([*cfg, "pod", "exec", "web", "--", "ip", "-br", "addr", "show", "eth0"]) == 0
        assert lines[1].split()[3] + "/24" in capsys.readouterr().out
        assert main([*cfg, "pod", "exec", "web", "--", "nosuchcmd"]) == 127
        assert "command not found: nosuchcmd on pod web" in capsys.readouterr().err
        assert main([*cfg, "exec", "node1", "--", "nosuchcmd"]) == 127
        err = capsys.readouterr().err
        assert "command not found: nosuchcmd on node1" in err and "nsenter" not in err
        assert main([*cfg, "pod", "del", "web"]) == 0
        assert "removed pod web from node1" in capsys.readouterr().err
        assert main([*cfg, "pod", "ls", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []
        assert main([*cfg, "cni", "check", "nosuch"]) == 1
        assert "no pod 'nosuch'" in capsys.readouterr().err
        locks = node_locks(name)
        assert locks, "the pods' ADDs took no cross-node lock: nothing to judge `down` by"
    finally:
        main([*cfg, "down"])
    assert lab_namespaces(name) == []
    left = [lock for lock in locks if lock.exists()]
    assert not left, f"`lab down` left the lab's cross-node locks: {left}"


def node_locks(lab: str) -> list[Path]:
    """The cross-node lock files named after the lab's node namespaces (their inodes)."""
    inodes = {str(os.stat(f"/run/netns/{ns}").st_ino) for ns in lab_namespaces(lab)}
    return [p for p in Path("/run/cnilab").glob("crossnode-*.lock")
            if p.stem.rsplit("-", 1)[-1] in inodes]


@pytest.mark.root
def test_dual_stack_labs_show_both_families(capsys):
    """`lab up`, `lab status`, `lab pod add` and `pod ls --json` with the v6 address too."""
    if not (REPO / "dist" / "cnilab").exists():
        pytest.skip("dist/cnilab is not built (python -m plugin.build)")
    name = "t3" + secrets.token_hex(3)
    cfg = ["-c", str(REPO / "examples" / "netns-dualstack.toml"), "--name", name]
    try:
        assert main([*cfg, "up"]) == 0
        assert f"lab {name} is up: node1 10.99.0.11 fd00:99::11," in capsys.readouterr().err
        assert main([*cfg, "status"]) == 0
        assert "node2\t10.99.0.12,fd00:99::12\trunning" in capsys.readouterr().out
        assert main([*cfg, "status", "--json"]) == 0
        nodes = json.loads(capsys.readouterr().out)["nodes"]
        assert nodes[0]["addresses"] == ["10.99.0.11", "fd00:99::11"]
        assert main([*cfg, "pod", "add", "node1", "web"]) == 0
        added = capsys.readouterr().out.split()
        assert added[3].split(",")[0].startswith("10.244.0.") and ":" in added[3].split(",")[1]
        assert main([*cfg, "pod", "ls", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert listed[0]["ips"] == added[3].split(",")
    finally:
        main([*cfg, "down"])
    assert lab_namespaces(name) == []


@pytest.mark.root
def test_check_of_a_config_before_0_4_0_is_refused_as_libcni_refuses_it(tmp_path, capsys):
    """CHECK exists from CNI 0.4.0: with a 0.3.1 config a runtime (libcni) refuses it without
    calling the plugin, so `lab cni check` fails even on a healthy pod, and `cni show` says
    that a runtime makes no such call before the plugin's own answer."""
    if not Path("/usr/lib/cni/ptp").exists():
        pytest.skip("the reference ptp is not installed (Debian's containernetworking-plugins)")
    text = (REPO / "examples" / "netns-ptp.toml").read_text()
    config = tmp_path / "lab.toml"
    config.write_text(text.replace('cniVersion = "1.0.0"', 'cniVersion = "0.3.1"')
                      .replace('[[nodes]]\nname = "node3"\n', ""))
    name = "t3" + secrets.token_hex(3)
    cfg = ["-c", str(config), "--name", name]
    try:
        assert main([*cfg, "up"]) == 0
        assert main([*cfg, "pod", "add", "node1", "web"]) == 0
        capsys.readouterr()
        assert main([*cfg, "cni", "check", "web"]) == 1
        err = capsys.readouterr().err
        assert 'configuration version "0.3.1" does not support the CHECK command' in err, err
        assert main([*cfg, "cni", "show", "web"]) == 0
        script = capsys.readouterr().out
        assert script.startswith("# a runtime makes no such call: libcni refuses it"), script
        ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"}, timeout=60, cwd="/")
        assert ran.returncode == 1, ran.stdout + ran.stderr     # ptp refuses it too
        assert json.loads(ran.stdout)["code"] == 1
    finally:
        main([*cfg, "down"])
    assert lab_namespaces(name) == []
