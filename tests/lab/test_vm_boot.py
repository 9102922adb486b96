"""Real VMs on qemu:///system (TCG on this machine): boot, SSH in with the pinned host key
only, run commands, reach the other node, and leave nothing behind."""
from __future__ import annotations

import base64
import hashlib

import pytest
from vm_lab import leftovers, provisioned_vm_lab

from lab.nodes.keys import host_keys
from lab.nodes.ssh import HostKeyMismatch, SshNode

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(900)]


def test_one_vm_boots_answers_ssh_and_destroy_leaves_nothing(tmp_path):
    with provisioned_vm_lab(tmp_path / "state", ("solo",)) as lab:
        (node,) = lab.nodes
        result = node.run(["hostname"], timeout=60)
        assert result.ok and result.stdout.strip() == "solo"
        status = {s.name: s for s in lab.provider.status()}
        assert status["solo"].state == "running"
        assert status["solo"].details["accel"] in ("tcg", "kvm")
        provider = lab.provider
    # the context manager destroyed the lab and asserted no leftovers; check once more here,
    # and that a second `lab down` is harmless
    provider.destroy()
    assert leftovers(provider) == []


def test_every_node_runs_commands_as_root_with_its_name_and_address(vm_lab):
    for node in vm_lab.nodes:
        result = node.run(["sh", "-c", "id -u; hostname; ip -4 -o addr show"], timeout=60)
        uid, hostname, *addrs = result.stdout.splitlines()
        assert (result.rc, uid, hostname) == (0, "0", node.name)
        assert any(f" {node.address}/" in line for line in addrs)
        assert node.state_dir == "/var/lib/cnilab"


def test_the_node_serves_exactly_the_host_key_the_harness_made(vm_lab):
    node = vm_lab.nodes[0]
    served = node.run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()[:2]
    assert " ".join(served) == node.host_key.public_line
    # and no other host key type was generated (the seed lists only ed25519)
    others = node.run(["sh", "-c", "ls /etc/ssh/ssh_host_*_key"]).stdout.split()
    assert others == ["/etc/ssh/ssh_host_ed25519_key"]


def test_a_different_host_key_is_refused_not_accepted(vm_lab, tmp_path):
    real = vm_lab.nodes[0]
    impostor_key = host_keys(tmp_path, real.name)      # a key the node never got
    suspicious = SshNode(real.name, real.address, host_key=impostor_key,
                         key_path=real.key_path, files_dir=tmp_path, user=real.user)
    with pytest.raises(HostKeyMismatch):
        suspicious.run(["true"], timeout=30)
    suspicious.close()


def test_nodes_reach_each_other_over_the_lab_network(vm_lab):
    n1, n2 = vm_lab.nodes
    result = n1.run(["ping", "-c", "2", "-W", "5", n2.address], timeout=60)
    assert result.ok, result.stdout + result.stderr


def test_files_upload_and_python_and_cni_plugins_are_there(vm_lab, tmp_path):
    node = vm_lab.nodes[1]
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 64)
    node.put_file(payload, "/opt/cni/bin/cnilab-t5-payload", mode=0o755)
    remote = node.run(["sha256sum", "/opt/cni/bin/cnilab-t5-payload"]).stdout.split()[0]
    assert remote == hashlib.sha256(payload.read_bytes()).hexdigest()
    node.run(["rm", "-f", "/opt/cni/bin/cnilab-t5-payload"]).check()
    assert node.run(["python3", "-c", "import sys; print(sys.version_info >= (3, 9))"]
                    ).stdout.strip() == "True"
    assert node.run(["test", "-x", "/usr/lib/cni/host-local"]).ok


def test_testinfra_reaches_the_node_with_the_pinned_key(vm_lab):
    import testinfra

    node = vm_lab.nodes[0]
    host = testinfra.get_host(node.testinfra_url)
    assert host.run("hostname").stdout.strip() == node.name
    assert host.file("/etc/ssh/ssh_host_ed25519_key.pub").contains(
        base64.b64encode(base64.b64decode(node.host_key.public_b64)).decode())


def test_a_fresh_provider_finds_the_lab_from_libvirt_alone(vm_lab):
    from lab.nodes.providers.libvirt.provider import LibvirtProvider

    fresh = LibvirtProvider(vm_lab.config, report=lambda _m: None)
    try:
        assert [(n.name, n.address) for n in fresh.nodes()] == [
            (n.name, n.address) for n in vm_lab.nodes]
        assert {s.state for s in fresh.status()} == {"running"}
    finally:
        fresh.close()


def test_cloud_init_finishes_cleanly_and_never_restarts_sshd(vm_lab):
    node = vm_lab.nodes[0]
    status = node.run(["cloud-init", "status", "--wait", "--long"], timeout=300)
    assert status.ok and "status: done" in status.stdout, status.stdout + status.stderr
    assert "NoCloud" in status.stdout
    # sshd started once: a restart after the node first answered would refuse connections
    starts = node.run(["journalctl", "-b", "-u", "ssh.service", "--no-pager", "-o", "cat"])
    assert starts.stdout.count("Server listening on 0.0.0.0 port 22") == 1, starts.stdout
    pw = node.run(["sshd", "-T"]).stdout
    assert "passwordauthentication no" in pw
