"""The K3s actions over the real SSH path (lab.nodes.ssh.SshNode, paramiko, pinned host key) to a
real sshd on 127.0.0.1 — the way they reach VMs and bare-metal runners. The sshd runs in a
private mount namespace whose /etc, /opt, /usr/local and /var/lib are overlays with their upper
layers in a tmp dir, so what the actions install lands there, never on this host. They stop
where K3s itself is needed: `systemctl` (systemd is not PID 1 here, and K3s cannot be
downloaded)."""
from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lab.api import ActionContext, LabError
from lab.config import parse_config
from lab.kube import cmdlines, deploy, k3s_install

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sshd_server import SSHD, Sshd  # tests/lab/sshd_server.py, from the SSH work

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not os.path.exists(SSHD) or os.geteuid() != 0,
                                 reason="needs root and openssh-server's /usr/sbin/sshd")]
OVERLAID = ("/etc", "/opt", "/usr/local", "/var/lib")


class OverlaySshd(Sshd):
    """sshd whose sessions see overlays instead of the host's /etc, /opt, /usr/local, /var/lib."""

    def __init__(self, workdir: Path, state_dir: Path, root: Path) -> None:
        super().__init__(workdir, state_dir)
        self.root = root

    def file(self, path: str) -> Path:
        for d in OVERLAID:
            if path.startswith(d + "/"):
                return self.root / "upper" / d.lstrip("/") / path[len(d) + 1:]
        raise ValueError(path)

    def start(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        mounts = []
        for d in OVERLAID:
            upper = self.root / "upper" / d.lstrip("/")
            work = self.root / "work" / d.lstrip("/")
            upper.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
            options = f"lowerdir={d},upperdir={upper},workdir={work}"
            mounts.append(f"mount -t overlay overlay -o {shlex.quote(options)} {d}")
        script = "set -e; " + "; ".join(mounts) + f"; exec {SSHD} -D -e -f {self.config}"
        self.launch(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])


@pytest.fixture
def ssh_node(tmp_path, monkeypatch):
    # The node stands in for a VM: K3s there is a systemd unit. This host has no systemd, and
    # the actions ask the node (lab.kube.node_kind): answer as a VM would, or they would start
    # a supervisor on this very host (the SSH server is this host).
    from lab.kube import k3s_install
    from lab.kube.node_kind import NodeKind

    monkeypatch.setattr(k3s_install, "kind_of", lambda node: NodeKind())
    from lab.nodes.ssh import SshNode

    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    work = tmp_path / "sshd"
    work.mkdir()
    server = OverlaySshd(work, lab_dir, tmp_path / "overlay")
    node = None
    try:
        server.start()
        node = SshNode("node1", server.address, port=server.port, host_key=server.host_keys,
                       key_path=server.key_path, files_dir=lab_dir / "ssh", connect_timeout=5,
                       state_dir="/var/lib/cnilab-test")
        yield node, server
    finally:
        if node is not None:
            node.close()
        from lab.nodes.ssh import close_shared_connections

        close_shared_connections(lab_dir / "ssh")   # deploy's shared connection, as lab down
        server.stop()
        subprocess.run(["chmod", "-R", "u+rwx", str(tmp_path / "overlay")], check=False)


def _config(tmp_path: Path, **k3s):
    plugin = tmp_path / "cnilab"
    plugin.write_text("#!/bin/sh\nexit 0\n")
    plugin.chmod(0o755)
    binary = tmp_path / "k3s-bin"
    binary.write_bytes(b"pretend k3s release binary\n" * 100)
    return parse_config({
        "lab": {"name": "overssh", "provider": "existing", "state_dir": str(tmp_path / "st")},
        "nodes": [{"name": "node1", "role": "server"}],
        "plugin": {"path": str(plugin), "type": "cnilab"},
        "k3s": {"mode": "airgap", "binary": str(binary), "airgap_dir": str(tmp_path),
                "pod_image": "registry.local/pod:1", **k3s}, "multus": {}})


def test_server_install_over_ssh_up_to_systemd(tmp_path, ssh_node):
    node, server = ssh_node
    config = _config(tmp_path)
    state = tmp_path / "st"
    state.mkdir()
    ctx = ActionContext(config=config, nodes=[node], state_dir=state)
    with pytest.raises(LabError, match="cannot start K3s server") as e:
        k3s_install.InstallK3sServer(poll=0.1).run(ctx)
    assert e.value.where == "node1"
    assert server.file(cmdlines.K3S_BIN).read_bytes() == config.k3s.binary.read_bytes()
    token = server.file(cmdlines.NODE_TOKEN_PATH)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_text() == (state / "k3s-token").read_text()
    unit = server.file("/etc/systemd/system/k3s.service").read_text()
    assert "ExecStart=/usr/local/bin/k3s server --node-name node1 --node-ip 127.0.0.1" in unit
    assert not Path("/etc/rancher/k3s").exists()   # the host itself was never touched


def test_primary_deploy_over_ssh(tmp_path, ssh_node):
    node, server = ssh_node
    config = _config(tmp_path, primary=True, cni_bin_dir="/opt/cni/bin",
                     cni_conf_dir="/etc/cni/net.d")
    spec = deploy.deploy_plugin(config, [node], poll=0.1)
    assert server.file("/opt/cni/bin/cnilab").read_bytes() == config.plugin_path.read_bytes()
    assert stat.S_IMODE(server.file("/opt/cni/bin/cnilab").stat().st_mode) == 0o755
    assert server.file("/etc/cni/net.d/05-overssh.conflist").exists()
    assert spec.ifname == "eth0"
    assert not Path("/opt/cni/bin/cnilab").exists()
