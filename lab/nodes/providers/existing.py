"""Nodes that already exist (bare-metal runners, hand-made VMs), reached over SSH.

The lab never creates or removes these machines. `provision` checks each one answers over SSH
with its pinned host key and claims a state dir on it; `destroy` undoes exactly what the lab
put there: files it uploaded outside the state dir (removed, or the original put back when the
upload replaced one), then the state dir itself.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from lab.api import LabError, Node, NodeStatus
from lab.config.remote import ExistingHost, ExistingSettings, SshSettings
from lab.nodes import keys
from lab.nodes.private import private_dir, read_private, write_private
from lab.nodes.providers.ssh_nodes import collect_logs, probe
from lab.nodes.ssh import SshNode, lab_ssh_dir, scan_host_key

if TYPE_CHECKING:
    from lab.config import LabConfig

# In the node's state dir: .cnilab-lab (which lab owns it), .cnilab-installed ("created PATH" /
# "replaced PATH" per upload outside it), .cnilab-backup/PATH (originals of replaced files).
CLAIM_FILE = ".cnilab-lab"

# $1 = state dir, $2 = path: note the upload (once) and keep the original if there is one.
_RECORD = r'''set -e
m="$1/.cnilab-installed"; p="$2"; mkdir -p "$1"
if [ -f "$m" ] && grep -qxF -e "created $p" -e "replaced $p" "$m"; then exit 0; fi
if [ -e "$p" ]; then
  b="$1/.cnilab-backup$p"; mkdir -p "$(dirname "$b")"; cp -a "$p" "$b"
  echo "replaced $p" >> "$m"
else
  echo "created $p" >> "$m"
fi'''

# $1 = state dir: undo the manifest, then remove the state dir — only if the lab claimed it.
_UNDO = r'''set -e
[ -f "$1/.cnilab-lab" ] || exit 0
m="$1/.cnilab-installed"
if [ -f "$m" ]; then
  while read -r kind p; do
    case "$kind" in
      created) rm -f -- "$p" ;;
      replaced) b="$1/.cnilab-backup$p"; if [ -e "$b" ]; then mv -f -- "$b" "$p"; fi ;;
    esac
  done < "$m"
fi
rm -rf -- "$1"'''


class TrackedSshNode(SshNode):
    """An SshNode whose uploads outside its state dir are recorded, so `lab down` undoes them."""

    def put_file(self, local: Path, remote: str, mode: int = 0o755) -> None:
        state = PurePosixPath(self.state_dir)
        target = PurePosixPath(remote)
        if target != state and state not in target.parents:
            self.run(["sh", "-c", _RECORD, "cnilab-record", self.state_dir, remote]
                     ).check(self.where)
        super().put_file(local, remote, mode)


class ExistingProvider:
    def __init__(self, config: LabConfig) -> None:
        if config.existing is None:
            raise LabError("provider \"existing\" needs an [existing] section with the hosts",
                           where="lab.toml",
                           hint='add [[existing.hosts]] entries: name, address, host_key')
        self.lab_name = config.name
        self.settings: ExistingSettings = config.existing
        self.ssh: SshSettings = config.ssh or SshSettings()
        self.harness_dir = config.harness_dir
        wanted = [n.name for n in config.nodes]
        given = [h.name for h in self.settings.hosts]
        if sorted(wanted) != sorted(given):
            raise LabError("[existing] hosts do not match [[nodes]]", where="lab.toml",
                           output=f"nodes: {', '.join(wanted)}\nhosts: {', '.join(given)}",
                           hint="list one [[existing.hosts]] entry per [[nodes]] name")
        order = {name: i for i, name in enumerate(wanted)}
        self.hosts = sorted(self.settings.hosts, key=lambda h: order[h.name])

    # --- lab.api.Provider -------------------------------------------------------------------

    def provision(self) -> list[Node]:
        nodes = [self._node(host, first_contact=True) for host in self.hosts]
        for node in nodes:
            node.wait_for_ssh(timeout=max(5.0, 2 * self.ssh.connect_timeout))
            self._claim(node)
        return list(nodes)

    def nodes(self) -> list[Node]:
        return [self._node(host) for host in self.hosts]

    def status(self) -> list[NodeStatus]:
        return [probe(self._node(host)) for host in self.hosts]

    def destroy(self) -> None:
        failed: list[str] = []
        for host in self.hosts:
            try:
                node = self._node(host)
                node.run(["sh", "-c", _UNDO, "cnilab-undo", node.state_dir],
                         timeout=120).check(node.where)
                node.close()
            except LabError as e:
                failed.append(e.describe())
        if failed:
            raise LabError("could not clean up every existing node (the machines stay as they "
                           "are; only the lab's files were to be removed)",
                           output="\n".join(failed),
                           hint="make the nodes reachable and run `lab down` again")

    def collect_logs(self, dest: Path) -> None:
        collect_logs([self._node(h) for h in self.hosts], dest)

    # --- helpers ----------------------------------------------------------------------------

    def _client_key(self) -> Path:
        override = self.ssh.key_path
        if override is not None:
            if not override.is_file():
                raise LabError(f"SSH key {override} does not exist", where="ssh.key")
            return override
        path, _public = keys.client_keypair(self.harness_dir)
        return path

    def _host_key(self, host: ExistingHost, *, first_contact: bool) -> keys.HostKeys:
        if host.host_key is not None:
            return keys.parse_public_line(host.host_key)
        # the record is as trusted as a pinned key: kept like the lab's other key files (a
        # private dir, never read through a link or from a file someone else made)
        tofu_dir = private_dir(lab_ssh_dir(self.harness_dir) / "tofu", "the host key records")
        recorded = tofu_dir / f"{host.name}.pub"
        if os.path.lexists(recorded):
            return keys.parse_public_line(read_private(recorded))
        if not first_contact:
            raise LabError(f"no host key recorded for {host.name} yet", where=host.name,
                           hint="run `lab up` first (trust_on_first_use records it there)")
        port = host.port or self.ssh.port
        line = scan_host_key(host.address, port, timeout=self.ssh.connect_timeout)
        write_private(recorded, (line + "\n").encode())
        print(f"warning: trusting the host key {host.name} ({host.address}:{port}) offered on "
              f"first contact: {line}\n  recorded in {recorded}; pin it as host_key in lab.toml",
              file=sys.stderr)
        return keys.parse_public_line(line)

    def _node(self, host: ExistingHost, *, first_contact: bool = False) -> TrackedSshNode:
        return TrackedSshNode(
            host.name, host.address,
            host_key=self._host_key(host, first_contact=first_contact),
            key_path=self._client_key(), files_dir=lab_ssh_dir(self.harness_dir),
            user=host.user or self.ssh.user, port=host.port or self.ssh.port,
            state_dir=self.settings.state_dir, connect_timeout=self.ssh.connect_timeout)

    def _claim(self, node: SshNode) -> None:
        """Marks the state dir as this lab's; refuses a host another lab already claimed."""
        claim = f"{node.state_dir}/{CLAIM_FILE}"
        current = node.run(["cat", claim])
        owner = current.stdout.strip()
        if current.ok and owner and owner != self.lab_name:
            raise LabError(f"{node.name} is already used by lab {owner!r}", where=node.where,
                           hint=f"run `lab down` for lab {owner!r}, or use another state_dir")
        node.run(["mkdir", "-p", node.state_dir]).check(node.where)
        node.run(["sh", "-c", 'printf "%s\\n" "$1" > "$2"', "cnilab-claim", self.lab_name,
                  claim]).check(node.where)
