"""`lab cni check|del|add|show POD`, `lab cni gc|status NODE`: the runtime's CNI calls by hand.

What cnitool gives its users, on the lab's own runtime: CHECK with the prevResult from the
cached ADD result, DEL, ADD again after a DEL, GC with the live attachments as the valid ones,
STATUS; the plugin's error JSON is printed as it came. `show` prints each call as a copy-paste
reproducer: the exact environment and stdin, run on the node with `lab exec` — by the absolute
paths of this python and this `lab`, so it runs the same under `sudo` or `env -i`.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from lab.api import CommandResult, LabError
from lab.cli._common import complete_nodes, complete_pods, lab_from
from lab.cli.pod import find_pod
from lab.runtime.cni_runtime import check_refused

POD_COMMANDS = {"check": "CHECK", "del": "DEL", "add": "ADD"}
NODE_COMMANDS = ("GC", "STATUS")


def _pods_and_nodes(prefix: str = "", parsed_args: argparse.Namespace | None = None,
                    **_: object) -> list[str]:
    return complete_pods(prefix, parsed_args) + complete_nodes(prefix, parsed_args)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "cni", help="run the runtime's CNI calls by hand (check, del, add, gc, status, show)",
        description="CNI calls on one pod's attachment or one node, exactly as the lab's "
                    "runtime makes them.")
    common = [subparsers.common] if hasattr(subparsers, "common") else []
    subcommands = p.add_subparsers(dest="cni_command", metavar="SUBCOMMAND", required=True)
    for name, doc in (("check", "CHECK with the cached ADD result as prevResult"),
                      ("del", "DEL of the pod's attachment (the pod stays)"),
                      ("add", "ADD again into the pod's namespace (after a DEL)")):
        sub = subcommands.add_parser(name, parents=common, help=doc)
        sub.add_argument("pod", metavar="POD", help="the pod (`lab pod ls`)"
                         ).completer = complete_pods  # type: ignore[attr-defined]
        if name == "add":
            sub.add_argument("--node", default=None,
                             help="the pod's node, once a DEL left no cached attachment")
        sub.add_argument("--ifname", default=None,
                         help="the pod's attachment on this interface (default: its first)")
    for name, doc in (("gc", "GC on NODE with its live attachments as the valid ones"),
                      ("status", "STATUS on NODE")):
        sub = subcommands.add_parser(name, parents=common, help=doc)
        sub.add_argument("node", metavar="NODE", help="the node (`lab status`)"
                         ).completer = complete_nodes  # type: ignore[attr-defined]
    show = subcommands.add_parser("show", parents=common,
                                  help="print the exact environment and stdin of a call")
    show.add_argument("pod", metavar="POD|NODE",
                      help="the pod (ADD, CHECK, DEL) or the node (GC, STATUS)"
                      ).completer = _pods_and_nodes  # type: ignore[attr-defined]
    show.add_argument("--command", choices=["CHECK", "DEL", "ADD", *NODE_COMMANDS],
                      default="CHECK", help="the call to show (default CHECK)")
    show.add_argument("--ifname", default=None,
                      help="the pod's attachment on this interface (default: its first)")
    return p


def lab_command() -> list[str]:
    """This very `lab`, by absolute paths (its python, its script): a reproducer must not
    depend on PATH, which `sudo` and `env -i` change."""
    script = Path(sys.argv[0])
    if script.name != "lab" or not script.is_file():    # called as main(argv) (tests)
        script = Path(sys.executable).parent / "lab"
    return [sys.executable, str(script.absolute())]


def reproducer(calls: list[tuple[list[str], str]], *, command: str, pod: str, node: str,
               lab_argv: list[str]) -> str:
    """Shell lines that make the same plugin calls by hand (pure; tested as text)."""
    what = f"on {node}" if command in NODE_COMMANDS else f"of pod {pod} on {node}"
    lines = [f"# CNI {command} {what}, as the runtime makes it "
             f"({len(calls)} plugin call{'s' if len(calls) != 1 else ''}):"]
    for argv, stdin in calls:
        lines += [f"{shlex.join([*lab_argv, 'exec', node, '--', *argv])} <<'CNI_STDIN'",
                  stdin, "CNI_STDIN"]
    return "\n".join(lines) + "\n"


def _print(result: CommandResult, ok: str) -> int:
    if result.stdout:
        print(result.stdout)
    if result.ok:
        print(result.stderr or ok, file=sys.stderr)
        return 0
    print(f"✗ {result.stderr}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    with lab_from(args) as lab:
        cluster = lab.cluster()
        what = args.cni_command
        if what in ("gc", "status"):
            result = cluster.cni_gc(args.node) if what == "gc" else cluster.cni_status(args.node)
            return _print(result, f"✓ {what.upper()} on {args.node}")
        if what == "show":
            lab_argv = [*lab_command(), "-c", str(Path(lab.config.source or args.config)
                                                  .absolute())]
            if args.name:
                lab_argv += ["--name", args.name]
            if args.command in NODE_COMMANDS:
                node_calls = getattr(cluster, "cni_node_calls", None)
                if node_calls is None:
                    raise LabError(f"`cni show --command {args.command}` is for netns and VM "
                                   "labs (on K3s the runtime is containerd's)")
                calls = node_calls(args.pod, args.command)
                print(reproducer(calls, command=args.command, pod="", node=args.pod,
                                 lab_argv=lab_argv), end="")
                return 0
            pod = find_pod(cluster, args.pod, args.ifname)
            refused = check_refused(cluster.cni_version) if args.command == "CHECK" else ""
            if refused:
                print(f"# a runtime makes no such call: libcni refuses it ({refused});\n"
                      "# below, what the plugin itself answers")
            print(reproducer(cluster.cni_calls(pod, args.command), command=args.command,
                             pod=pod.name, node=pod.node, lab_argv=lab_argv), end="")
            return 0
        pods = {p.name: p for p in cluster.pods()}
        if what == "add" and args.node and args.pod not in pods:
            detached = getattr(cluster, "detached_pod", None)
            if detached is None:
                raise LabError("ADD by hand is only for netns and VM labs")
            pod = detached(args.pod, args.node)
        else:
            pod = find_pod(cluster, args.pod, args.ifname)
            if what == "add" and args.node and args.node != pod.node:
                raise LabError(f"pod {pod.name} is on {pod.node}, not {args.node}",
                               hint=f"`lab cni add {pod.name}` (its own node), or "
                                    f"`lab pod del {pod.name}` first to make it elsewhere")
        command = POD_COMMANDS[what]
        return _print(cluster.cni_call(pod, command), f"✓ {command} of {pod.name}")
