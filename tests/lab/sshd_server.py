"""A real OpenSSH sshd on 127.0.0.1:<random port> for tests, keyed with lab.nodes.keys material.

The host key comes from lab.nodes.keys.host_keys (as the libvirt seed injects it) and the lab client
key is the only authorized key, so tests exercise exactly what a VM node would present.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from lab.nodes import keys

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sshd:
    """One sshd process; start() may be called after a delay, stop() is safe to repeat."""

    def __init__(self, workdir: Path, state_dir: Path, node: str = "node1") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.address = "127.0.0.1"
        self.host_keys = keys.host_keys(state_dir, node)
        self.key_path, public_line = keys.client_keypair(state_dir)
        host_key_file = workdir / "ssh_host_ed25519_key"
        host_key_file.write_text(self.host_keys.private_pem)
        host_key_file.chmod(0o600)
        authorized = workdir / "authorized_keys"
        authorized.write_text(public_line + "\n")
        self.config = workdir / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.address}",
            f"HostKey {host_key_file}",
            f"PidFile {workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",            # the tmp dir's modes are pytest's, not ours
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
        ]) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Debian's sshd refuses to start without its privilege separation directory (the
        # package's init normally makes it; it is left in place, empty, as Debian expects).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.launch([SSHD, "-D", "-e", "-f", str(self.config)])

    def launch(self, argv: list[str]) -> None:
        """Starts argv (an sshd, possibly wrapped) and waits until the port answers."""
        # Own session: stop() kills the listener and every per-connection child with it.
        self.proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "sshd.log", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited: " + (self.workdir / "sshd.log").read_text())
            try:
                socket.create_connection((self.address, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not listen within 10 s")

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None
