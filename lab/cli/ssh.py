"""`lab ssh NODE [CMD...]`: a shell on an SSH node (VM, vagrant, existing), or one command.

The shell is the system `ssh` with the lab's key, the node's pinned known_hosts entry and
StrictHostKeyChecking=yes (it owns the terminal best); without an ssh binary, a paramiko shell
with the local terminal in raw mode. With CMD, its output is printed and its exit code returned.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from lab.api import LabError
from lab.cli._common import complete_nodes

if TYPE_CHECKING:
    from lab.nodes.ssh import SshNode


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ssh", help="open a shell on a node over SSH, or run one command",
        description="Open a shell on NODE over SSH (lab key, pinned host key), or run CMD there "
                    "and pass its exit code on.")
    p.add_argument("node", metavar="NODE", help="an SSH node of the lab (`lab status`)"
                   ).completer = complete_nodes  # type: ignore[attr-defined]
    p.add_argument("argv", metavar="CMD", nargs="*",
                   help="a command to run instead of a shell, after -- (needed once it has "
                        "options of its own)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds CMD may take (default 600)")
    return p


def run(args: argparse.Namespace) -> int:
    from lab.cli._common import lab_from
    from lab.nodes.ssh import SshNode

    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    node = lab_from(args).node(args.node)
    if argv:
        result = node.run(argv, timeout=args.timeout)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.rc
    shell = getattr(node, "shell_argv", None)
    if callable(shell):     # container nodes: a login shell entered with nsenter
        return subprocess.call(shell())
    if not isinstance(node, SshNode):
        raise LabError(f"{node.name} is not reached over SSH (it is a {type(node).__name__})",
                       hint=f"use `lab exec {node.name} -- bash` for a shell there")
    return interactive(node)


def interactive(node: SshNode) -> int:
    """A login shell on node; the system ssh when there is one, paramiko otherwise."""
    if shutil.which("ssh"):
        return subprocess.call(node.system_ssh_argv())
    return paramiko_shell(node)


def paramiko_shell(node: SshNode) -> int:
    """Relays a paramiko shell channel to this terminal, which is put in raw mode meanwhile."""
    import select
    import termios
    import tty

    if not sys.stdin.isatty():
        raise LabError("an interactive shell needs a terminal",
                       hint=f"give a command: lab ssh {node.name} -- CMD")
    size = shutil.get_terminal_size()
    chan = node.connect().invoke_shell(term=os.environ.get("TERM", "xterm"),
                                       width=size.columns, height=size.lines)
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin)
    try:
        tty.setraw(stdin)
        while True:
            readable, _, _ = select.select([chan, stdin], [], [])
            if chan in readable:
                data = chan.recv(32768)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if stdin in readable:
                typed = os.read(stdin, 1024)
                if not typed:
                    chan.shutdown_write()   # the remote shell sees EOF and exits
                    break
                chan.sendall(typed)
        # sshd may send exit-status just after its EOF: wait for it before closing our end,
        # or a shell's `exit 3` reads as -1
        status = chan.recv_exit_status()
    finally:
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        chan.close()
    return status if status >= 0 else 255
