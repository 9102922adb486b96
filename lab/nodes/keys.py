"""SSH key material the harness owns: the lab's client key and each node's host key.

Both are made on the harness side so nothing is ever trusted blindly: the client key goes into
the node's authorized_keys, and the host key goes into the node (cloud-init seed) *and* into the
harness's known_hosts before the node first boots, so the very first connection is already pinned.

Contract (used by the libvirt provider and lab.nodes.ssh):

    client_keypair(state_dir: Path) -> tuple[Path, str]
        the lab's client key (created 0600 if missing) and its public line
        "ssh-ed25519 AAAA… cnilab"
    host_keys(state_dir: Path, node: str) -> HostKeys
        per-node SSH host key pair generated on the harness side (created once, reused), so the
        libvirt seed can inject it and known_hosts pins it; HostKeys has .private_pem (str),
        .public_line (str, "ssh-ed25519 AAAA…"), .key_type (str)
    known_hosts_line(address: str, keys: HostKeys) -> str

Layout under state_dir: ssh/id_ed25519{,.pub}, ssh/hosts/<node>/ssh_host_ed25519_key{,.pub}.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# `cryptography` comes with paramiko; it writes OpenSSH-format keys that both paramiko and
# OpenSSH's sshd read, so no ssh-keygen binary is needed.
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lab.api import LabError
from lab.nodes.private import private_dir, read_private, write_private

KEY_TYPE = "ssh-ed25519"
CLIENT_KEY_COMMENT = "cnilab"
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class HostKeys:
    private_pem: str      # OpenSSH private key ("-----BEGIN OPENSSH PRIVATE KEY-----…")
    public_line: str      # "ssh-ed25519 AAAA…"
    key_type: str         # "ssh-ed25519" (what known_hosts and sshd call it)

    @property
    def public_b64(self) -> str:
        return self.public_line.split()[1]


def ssh_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "ssh"


def client_keypair(state_dir: Path) -> tuple[Path, str]:
    """The lab's client key path (0600, created if missing) and its public line."""
    key_path = ssh_dir(state_dir) / "id_ed25519"
    private_pem, public_line = _load_or_create(key_path, comment=CLIENT_KEY_COMMENT)
    del private_pem
    return key_path, public_line


def host_keys(state_dir: Path, node: str) -> HostKeys:
    """The node's SSH host key pair, generated here once and reused on every later call."""
    if not _NODE_NAME.match(node):
        raise LabError(f"node name {node!r} cannot name a host key directory",
                       hint="use letters, digits, '-', '_' or '.'")
    key_path = ssh_dir(state_dir) / "hosts" / node / "ssh_host_ed25519_key"
    private_pem, public_line = _load_or_create(key_path, comment="")
    return HostKeys(private_pem=private_pem, public_line=public_line, key_type=KEY_TYPE)


def known_hosts_line(address: str, keys: HostKeys, port: int = 22) -> str:
    """One known_hosts entry pinning keys for address (OpenSSH writes "[addr]:port" off 22)."""
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {keys.key_type} {keys.public_b64}"


def parse_public_line(line: str) -> HostKeys:
    """A HostKeys carrying only a public key (pinned from config); private_pem is empty."""
    fields = line.split()
    if len(fields) < 2 or not fields[0].startswith(("ssh-", "ecdsa-")):
        raise LabError(f"not an SSH public key line: {line!r}",
                       hint='expected "ssh-ed25519 AAAA…" as printed by ssh-keyscan or '
                            "/etc/ssh/ssh_host_ed25519_key.pub")
    return HostKeys(private_pem="", public_line=f"{fields[0]} {fields[1]}", key_type=fields[0])


def _load_or_create(key_path: Path, *, comment: str) -> tuple[str, str]:
    """The key at `key_path`, made if missing. Its directory and every one above it must be
    ours alone (lab.nodes.private): whoever could write them could read or swap the key."""
    pub_path = key_path.with_name(key_path.name + ".pub")
    private_dir(key_path.parent, "the key directory")
    if os.path.lexists(key_path):
        private_pem = read_private(key_path)
        key = serialization.load_ssh_private_key(private_pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise LabError(f"{key_path} is not an ed25519 key",
                           hint="remove it and let the lab generate a new one")
        os.chmod(key_path, 0o600)   # a key copied around may have lost its mode; ssh refuses it
        return private_pem, _public_line(key, comment)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption()).decode()
    # Created 0600 from the start (not chmod after), new, under a name of its own.
    write_private(key_path, private_pem.encode(), 0o600)
    public_line = _public_line(key, comment)
    write_private(pub_path, (public_line + "\n").encode(), 0o644)
    return private_pem, public_line


def _public_line(key: Ed25519PrivateKey, comment: str) -> str:
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}" if comment else line
