"""The `existing` provider against a real sshd: it checks, claims and cleans up, never more."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from sshd_server import Sshd

from lab.api import LabError
from lab.config import LabConfig
from lab.config.remote import ExistingHost, ExistingSettings
from lab.nodes import keys
from lab.nodes.providers.existing import ExistingProvider
from lab.nodes.ssh import HostKeyMismatch

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd") or os.geteuid() != 0,
                       reason="needs root and openssh-server's /usr/sbin/sshd"),
]


@pytest.fixture
def harness(tmp_path):
    d = tmp_path / "harness"
    d.mkdir()
    return d


@pytest.fixture
def sshd(tmp_path, harness):
    work = tmp_path / "sshd"
    work.mkdir()
    server = Sshd(work, harness)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def lab_config(harness, sshd, node_state, *, lab="exist", **host) -> LabConfig:
    entry = {"name": "node1", "address": sshd.address, "port": sshd.port,
             "host_key": sshd.host_keys.public_line, **host}
    entry = {k: v for k, v in entry.items() if v is not None}
    return LabConfig.model_validate({
        "lab": {"name": lab, "provider": "existing", "state_dir": str(harness)},
        "nodes": [{"name": "node1"}],
        "plugin": {"path": "/bin/true"},
        "ssh": {"connect_timeout": 2},
        "existing": {"hosts": [entry], "state_dir": str(node_state)},
    })


def test_provision_claims_and_destroy_undoes_exactly_what_the_lab_put(tmp_path, harness, sshd):
    node_state = tmp_path / "node-state"
    bin_dir = tmp_path / "opt-cni-bin"
    bin_dir.mkdir()
    (bin_dir / "bridge").write_text("original bridge")
    (bin_dir / "host-local").write_text("not ours")
    provider = ExistingProvider(lab_config(harness, sshd, node_state))

    [node] = provider.provision()
    assert node.run(["hostname"]).ok
    assert (node_state / ".cnilab-lab").read_text() == "exist\n"
    plugin = tmp_path / "cnilab"
    plugin.write_text("#!/bin/sh\necho lab plugin\n")
    node.put_file(plugin, str(bin_dir / "cnilab"))          # created by the lab
    node.put_file(plugin, str(bin_dir / "bridge"))          # replaces a file that was there
    node.put_file(plugin, str(bin_dir / "bridge"))          # twice: the original stays kept
    node.put_file(plugin, str(node_state / "results" / "x"))  # inside the state dir
    assert (bin_dir / "bridge").read_text() == plugin.read_text()
    assert [s.state for s in provider.status()] == ["running"]
    assert provider.provision()[0].name == "node1"          # safe to repeat

    provider.destroy()
    assert not (bin_dir / "cnilab").exists()
    assert (bin_dir / "bridge").read_text() == "original bridge"
    assert (bin_dir / "host-local").read_text() == "not ours"
    assert not node_state.exists()
    provider.destroy()                                      # nothing left: still fine


def test_a_host_claimed_by_another_lab_is_refused(tmp_path, harness, sshd):
    node_state = tmp_path / "node-state"
    ExistingProvider(lab_config(harness, sshd, node_state, lab="one")).provision()
    with pytest.raises(LabError, match="already used by lab 'one'"):
        ExistingProvider(lab_config(harness, sshd, node_state, lab="two")).provision()
    ExistingProvider(lab_config(harness, sshd, node_state, lab="one")).destroy()
    assert not node_state.exists()


def test_wrong_pinned_key_stops_provision(tmp_path, harness, sshd):
    other = keys.host_keys(harness, "other").public_line
    provider = ExistingProvider(lab_config(harness, sshd, tmp_path / "s", host_key=other))
    with pytest.raises(HostKeyMismatch):
        provider.provision()
    assert not (tmp_path / "s").exists()


def test_trust_on_first_use_records_the_key_warns_and_pins_it(tmp_path, harness, sshd, capsys):
    config = lab_config(harness, sshd, tmp_path / "s", host_key=None, trust_on_first_use=True)
    provider = ExistingProvider(config)
    provider.provision()
    warning = capsys.readouterr().err
    assert "warning: trusting the host key node1" in warning and "pin it as host_key" in warning
    recorded = harness / "ssh" / "tofu" / "node1.pub"
    assert recorded.read_text().strip() == sshd.host_keys.public_line
    # From now on the recorded key is pinned: a changed key is refused, not re-trusted.
    recorded.write_text(keys.host_keys(harness, "impostor").public_line + "\n")
    with pytest.raises(HostKeyMismatch):
        ExistingProvider(config).nodes()[0].run(["true"])
    recorded.write_text(sshd.host_keys.public_line + "\n")
    provider.destroy()


def test_unreachable_host_fails_with_the_reason(tmp_path, harness, sshd):
    sshd.stop()
    provider = ExistingProvider(lab_config(harness, sshd, tmp_path / "s"))
    with pytest.raises(LabError, match="no SSH answer from node1"):
        provider.provision()
    [status] = provider.status()
    assert status.state == "unreachable" and "refused" in status.details["error"].lower()


def test_config_errors_are_clear():
    with pytest.raises(ValidationError, match="host_key is required"):
        ExistingHost(name="n", address="10.0.0.1")
    with pytest.raises(ValidationError, match="not an SSH public key line"):
        ExistingHost(name="n", address="10.0.0.1", host_key="hello world")
    keyscan = "10.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE"
    assert ExistingHost(name="n", address="10.0.0.1", host_key=keyscan).host_key == \
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE"
    with pytest.raises(ValidationError, match="absolute directory of the lab's own"):
        ExistingSettings(hosts=[ExistingHost(name="n", address="a", trust_on_first_use=True)],
                         state_dir="/")


def test_hosts_must_match_nodes(tmp_path, harness, sshd):
    config = lab_config(harness, sshd, tmp_path / "s")
    config.nodes[0].name = "other"
    with pytest.raises(LabError, match="do not match"):
        ExistingProvider(config)


# --- `lab ssh` through the CLI, against the same real sshd ---------------------------------------

def write_lab_toml(tmp_path, harness, sshd) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(f"""
[lab]
name = "sshcli"
provider = "existing"
state_dir = "{harness}"

[[nodes]]
name = "node1"

[plugin]
path = "/bin/true"

[ssh]
connect_timeout = 2

[existing]
state_dir = "{tmp_path / 'node-state'}"

[[existing.hosts]]
name = "node1"
address = "{sshd.address}"
port = {sshd.port}
host_key = "{sshd.host_keys.public_line}"
""")
    return path


def test_lab_ssh_runs_a_command_and_returns_its_rc(tmp_path, harness, sshd, capfd):
    from lab.cli import main

    toml = write_lab_toml(tmp_path, harness, sshd)
    assert main(["-c", str(toml), "ssh", "node1", "--", "sh", "-c", "echo out; exit 4"]) == 4
    assert capfd.readouterr().out == "out\n"
    assert main(["-c", str(toml), "ssh", "node9", "--", "true"]) != 0
    assert "no node 'node9'" in capfd.readouterr().err


def test_lab_exec_over_ssh_passes_piped_stdin_on(tmp_path, harness, sshd):
    """`lab exec NODE -- sh -c 'cat > f' < file` on an SSH node wrote an empty file before."""
    import hashlib
    import subprocess
    import sys

    toml = write_lab_toml(tmp_path, harness, sshd)
    data = bytes(range(256)) * 256                       # 64 KiB of every byte value
    target = tmp_path / "received.bin"
    lab = Path(sys.executable).parent / "lab"
    done = subprocess.run([str(lab), "-c", str(toml), "exec", "node1", "--", "sh", "-c",
                           f"cat > {target}; sha256sum {target}"],
                          input=data, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == data
    assert done.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def run_in_pty(argv, typed: bytes, env=None, timeout=30.0) -> tuple[int, bytes]:
    """Runs argv with a pseudo-terminal as stdin/stdout (as a user's shell would)."""
    import select
    import subprocess
    import time

    controller, terminal = os.openpty()
    proc = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal,
                            env=env, start_new_session=True)
    os.close(terminal)
    out = b""
    sent = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:      # EIO: the other side closed
                    break
                if not chunk:
                    break
                out += chunk
            if not sent and time.monotonic() > deadline - timeout + 1.5:
                os.write(controller, typed)
                sent = True
            if proc.poll() is not None and not ready:
                break
        rc = proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    return rc, out


@pytest.mark.parametrize("shell", ["system-ssh", "paramiko"])
def test_lab_ssh_without_cmd_opens_an_interactive_shell(tmp_path, harness, sshd, shell):
    import shutil
    import sys

    toml = write_lab_toml(tmp_path, harness, sshd)
    lab_bin = Path(sys.executable).parent / "lab"
    env = dict(os.environ)
    if shell == "paramiko":                 # no ssh binary on PATH: the paramiko fallback
        env["PATH"] = str(Path(sys.executable).parent)
        assert shutil.which("ssh", path=env["PATH"]) is None
    rc, out = run_in_pty([str(lab_bin), "-c", str(toml), "ssh", "node1"],
                         b"echo magic-$((6*7))\nexit 3\n", env=env)
    assert b"magic-42" in out, out.decode(errors="replace")
    assert rc == 3
