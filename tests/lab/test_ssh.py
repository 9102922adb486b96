"""lab.nodes.keys and lab.nodes.ssh against a real OpenSSH sshd (127.0.0.1, random port)."""
from __future__ import annotations

import os
import shutil
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest
from sshd_server import Sshd, free_port

from lab.api import LabError, Node
from lab.nodes import keys
from lab.nodes.ssh import (
    CommandTimeout,
    HostKeyMismatch,
    SshNode,
    remote_command_line,
    scan_host_key,
    ssh_config_text,
)

needs_sshd = pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd") or os.geteuid() != 0,
                                reason="needs root and openssh-server's /usr/sbin/sshd")


# --- keys (no sshd) -----------------------------------------------------------------------------

def test_client_keypair_is_private_and_reused(tmp_path):
    path, public = keys.client_keypair(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public.startswith("ssh-ed25519 AAAA") and public.endswith(" cnilab")
    assert keys.client_keypair(tmp_path) == (path, public)
    assert (path.parent / "id_ed25519.pub").read_text().strip() == public


def test_host_keys_are_per_node_and_reused(tmp_path):
    a = keys.host_keys(tmp_path, "node1")
    assert a.key_type == "ssh-ed25519"
    assert a.private_pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert a.public_line.split()[0] == "ssh-ed25519" and len(a.public_line.split()) == 2
    assert keys.host_keys(tmp_path, "node1") == a
    assert keys.host_keys(tmp_path, "node2").public_line != a.public_line


def test_known_hosts_line_brackets_non_default_port(tmp_path):
    k = keys.host_keys(tmp_path, "n")
    assert keys.known_hosts_line("10.0.0.5", k) == f"10.0.0.5 ssh-ed25519 {k.public_b64}"
    assert keys.known_hosts_line("10.0.0.5", k, port=2222).startswith("[10.0.0.5]:2222 ")


def test_bad_node_name_and_bad_public_line_are_clear_errors(tmp_path):
    with pytest.raises(LabError, match="cannot name a host key directory"):
        keys.host_keys(tmp_path, "../etc")
    with pytest.raises(LabError, match="not an SSH public key line"):
        keys.parse_public_line("hello")


def test_remote_command_line_shapes():
    assert remote_command_line(["echo", "a b"], as_root=False, timeout=None, env=None) == \
        "echo 'a b'"
    line = remote_command_line(["ip", "a"], as_root=True, timeout=3, env={"CNI_COMMAND": "ADD"})
    assert line == "sudo -n -- env CNI_COMMAND=ADD timeout -k 5 3 ip a"


# --- a real sshd --------------------------------------------------------------------------------

@pytest.fixture
def lab_dir(tmp_path):
    d = tmp_path / "lab"
    d.mkdir()
    return d


@pytest.fixture
def sshd(tmp_path, lab_dir):
    work = tmp_path / "sshd"
    work.mkdir()
    server = Sshd(work, lab_dir)
    try:
        yield server
    finally:
        server.stop()


def make_node(sshd: Sshd, lab_dir: Path, **kw) -> SshNode:
    return SshNode("node1", sshd.address, port=sshd.port, host_key=sshd.host_keys,
                   key_path=sshd.key_path, files_dir=lab_dir / "ssh", connect_timeout=5, **kw)


@pytest.fixture
def node(sshd, lab_dir):
    sshd.start()
    n = make_node(sshd, lab_dir)
    try:
        yield n
    finally:
        n.close()


@needs_sshd
@pytest.mark.root
def test_run_returns_rc_stdout_stderr_and_takes_stdin(node):
    assert isinstance(node, Node)
    r = node.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.rc, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert node.run(["cat"], input="hello\nworld\n").stdout == "hello\nworld\n"
    big = "x" * 300_000 + "\n"     # more than one SSH window: stdin must not deadlock output
    assert node.run(["wc", "-c"], input=big).stdout.strip() == str(len(big))
    env = node.run(["sh", "-c", 'echo "$CNI_COMMAND/$X"'], env={"CNI_COMMAND": "ADD", "X": "a b"})
    assert env.stdout == "ADD/a b\n"


@needs_sshd
@pytest.mark.root
def test_timeout_stops_the_command_on_the_node(node, tmp_path):
    marker = f"cns6-sleep-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="timed out after 1s"):
        node.run(["bash", "-c", f"exec -a {marker} sleep 30"], timeout=1)
    assert time.monotonic() - started < 5
    time.sleep(0.3)
    assert node.run(["pgrep", "-f", f"^{marker}"]).rc == 1, "the timed-out command still runs"
    assert node.run(["echo", "still usable"]).stdout == "still usable\n"


@needs_sshd
@pytest.mark.root
def test_put_file_writes_content_and_mode_creating_parents(node, tmp_path):
    local = tmp_path / "plugin"
    local.write_text("#!/bin/sh\necho hi\n")
    remote_dir = tmp_path / "remote" / "opt" / "cni" / "bin"
    node.put_file(local, str(remote_dir / "cnilab"), mode=0o750)
    target = remote_dir / "cnilab"
    assert target.read_text() == local.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert node.run([str(target)]).stdout == "hi\n"
    local.write_text("#!/bin/sh\necho v2\n")
    node.put_file(local, str(target), mode=0o755)          # replacing works too
    assert node.run([str(target)]).stdout == "v2\n"
    assert sorted(p.name for p in remote_dir.iterdir()) == ["cnilab"]   # no staging leftovers
    with pytest.raises(LabError, match="must be absolute"):
        node.put_file(local, "relative/path")


@needs_sshd
@pytest.mark.root
def test_wrong_host_key_is_refused_with_a_clear_error(sshd, lab_dir):
    sshd.start()
    other = keys.host_keys(lab_dir, "someone-else")
    node = SshNode("node1", sshd.address, port=sshd.port, host_key=other,
                   key_path=sshd.key_path, files_dir=lab_dir / "ssh", connect_timeout=5)
    with pytest.raises(HostKeyMismatch) as err:
        node.run(["true"])
    text = err.value.describe()
    assert "does not match the pinned key" in text and "node1" in text
    assert sshd.host_keys.public_line not in text and "SHA256:" in text
    # wait_for_ssh must not retry a wrong key for its whole timeout
    started = time.monotonic()
    with pytest.raises(HostKeyMismatch):
        node.wait_for_ssh(timeout=30)
    assert time.monotonic() - started < 10


@needs_sshd
@pytest.mark.root
def test_wait_for_ssh_retries_until_sshd_appears(sshd, lab_dir):
    node = make_node(sshd, lab_dir)
    timer = threading.Timer(2.0, sshd.start)
    timer.start()
    try:
        started = time.monotonic()
        node.wait_for_ssh(timeout=30, interval=0.5)
        assert time.monotonic() - started >= 1.5
        assert node.run(["echo", "up"]).stdout == "up\n"
    finally:
        timer.join()
        node.close()


@needs_sshd
@pytest.mark.root
def test_wait_for_ssh_gives_up_with_the_last_error(lab_dir):
    k = keys.host_keys(lab_dir, "node1")
    key_path, _ = keys.client_keypair(lab_dir)
    node = SshNode("node1", "127.0.0.1", port=free_port(), host_key=k, key_path=key_path,
                   files_dir=lab_dir / "ssh", connect_timeout=1)
    with pytest.raises(LabError) as err:
        node.wait_for_ssh(timeout=2, interval=0.5)
    text = err.value.describe()
    assert "no SSH answer from node1 within 2s" in text and "refused" in text.lower()


@needs_sshd
@pytest.mark.root
@pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo is not installed")
def test_sudo_path_runs_and_uploads_through_sudo(sshd, lab_dir, tmp_path):
    # Logging in as a non-root user needs a system account (too invasive on a shared machine):
    # here root goes through the very same `sudo -n` command lines a non-root user gets.
    sshd.start()
    node = make_node(sshd, lab_dir, sudo=True)
    try:
        r = node.run(["sh", "-c", 'echo "$SUDO_USER:$(id -u)"'])
        assert r.rc == 0 and r.stdout == "root:0\n"
        local = tmp_path / "f"
        local.write_text("data")
        target = tmp_path / "via-sudo" / "d" / "f"
        node.put_file(local, str(target), mode=0o640)
        assert target.read_text() == "data" and stat.S_IMODE(target.stat().st_mode) == 0o640
        assert "&sudo=true" in node.testinfra_url
    finally:
        node.close()


@needs_sshd
@pytest.mark.root
def test_testinfra_reaches_the_node_with_the_pinned_key(node, tmp_path, lab_dir, sshd):
    import testinfra

    marker = tmp_path / "seen-by-testinfra"
    marker.write_text("x")
    url = node.testinfra_url
    assert url == (f"paramiko://root@127.0.0.1:{sshd.port}"
                   f"?ssh_config={lab_dir / 'ssh' / 'node1.ssh_config'}")
    assert node.known_hosts_path.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    host = testinfra.get_host(url)
    assert host.file(str(marker)).exists
    assert not host.file(str(tmp_path / "absent")).exists
    assert host.run("id -u").stdout.strip() == "0"


@needs_sshd
@pytest.mark.root
def test_testinfra_refuses_a_host_key_other_than_the_pinned_one(node, lab_dir):
    import paramiko
    import testinfra

    url = node.testinfra_url
    other = keys.host_keys(lab_dir, "someone-else")
    node.known_hosts_path.write_text(keys.known_hosts_line(node.address, other, port=node.port))
    with pytest.raises(paramiko.BadHostKeyException):
        testinfra.get_host(url).run("true")


@needs_sshd
@pytest.mark.root
def test_system_ssh_uses_the_lab_key_and_pinned_host_key(node):
    import subprocess

    if shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    argv = node.system_ssh_argv(["echo", "via system ssh"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "via system ssh\n"
    assert "StrictHostKeyChecking yes" in ssh_config_text(node)


@needs_sshd
@pytest.mark.root
def test_scan_host_key_reads_the_offered_key(sshd):
    sshd.start()
    assert scan_host_key(sshd.address, sshd.port) == sshd.host_keys.public_line


@needs_sshd
@pytest.mark.root
def test_a_shared_connection_serves_later_processes_and_ends_at_lab_down(sshd, lab_dir):
    """`lab deploy` is a new process each time: its commands go over one OpenSSH master
    connection that outlives the process. Proof that a later process reuses it: the listener
    is gone by then (only the established connection is left), and it still answers."""
    import signal
    import subprocess
    import sys
    import tempfile

    from lab.nodes.ssh import close_shared_connections

    short = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))   # AF_UNIX paths are short
    try:
        sshd.start()
        node = make_node(sshd, short)
        first = node.run_shared(["sh", "-c", "cat; echo err >&2; exit 4"], input=b"payload")
        assert (first.rc, first.stdout, first.stderr) == (4, "payload", "err\n")
        assert node.control_path.is_socket()
        assert sshd.proc is not None
        os.kill(sshd.proc.pid, signal.SIGTERM)       # no new connection is possible now
        sshd.proc.wait(timeout=10)
        with pytest.raises(LabError, match="cannot connect"):
            node.run(["true"])                       # paramiko needs a new connection
        later = subprocess.run(
            [sys.executable, "-c",
             "import sys; from lab.nodes.ssh import SshNode; from lab.nodes import keys; "
             "from pathlib import Path; "
             f"n = SshNode('node1', {sshd.address!r}, port={sshd.port}, "
             f"host_key=keys.host_keys(Path({str(lab_dir)!r}), 'node1'), "
             f"key_path=Path({str(sshd.key_path)!r}), files_dir=Path({str(short / 'ssh')!r}), "
             "connect_timeout=5); r = n.run_shared(['echo', 'reused']); "
             "sys.exit(0 if r.stdout == 'reused\\n' else 1)"],
            capture_output=True, text=True, timeout=60, check=False)
        assert later.returncode == 0, later.stderr
        assert close_shared_connections(short / "ssh") == ["node1"]
        assert not node.control_path.exists()
        assert close_shared_connections(short / "ssh") == []
    finally:
        close_shared_connections(short / "ssh")
        shutil.rmtree(short, ignore_errors=True)


@needs_sshd
@pytest.mark.root
def test_a_shared_connection_refuses_a_host_key_other_than_the_pinned_one(sshd, lab_dir):
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))
    try:
        sshd.start()
        wrong = keys.host_keys(lab_dir, "someone-else")
        node = SshNode("node1", sshd.address, port=sshd.port, host_key=wrong,
                       key_path=sshd.key_path, files_dir=short / "ssh", connect_timeout=5)
        with pytest.raises(HostKeyMismatch):
            node.run_shared(["true"])
        assert not node.control_path.exists()
    finally:
        shutil.rmtree(short, ignore_errors=True)
