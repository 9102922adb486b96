"""`lab pod add|del|ls|exec`: pods on the lab's nodes by hand, through the same runtime the
scenarios use (namespaces + libcni-like calls on netns/VM labs, Kubernetes pods on K3s).

    lab pod add NODE NAME      a pod on NODE attached to the network under test
    lab pod ls [--json]        the pods, their node, interface and addresses
    lab pod del NAME           DEL and remove it (DEL twice is fine)
    lab pod exec NAME -- CMD   run CMD inside the pod (its exit code is lab's)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from lab.api import Cluster, LabError, Pod
from lab.cli._common import complete_nodes, complete_pods, lab_from


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "pod", help="add, list, delete pods and run commands in them by hand",
        description="Pods on the lab's nodes, attached to the network under test by the lab's "
                    "runtime (the one the scenarios use).")
    common = [subparsers.common] if hasattr(subparsers, "common") else []
    subcommands = p.add_subparsers(dest="pod_command", metavar="SUBCOMMAND", required=True)
    add = subcommands.add_parser("add", parents=common, help="a new pod on NODE")
    add.add_argument("node", metavar="NODE", help="the node the pod runs on (`lab status`)"
                     ).completer = complete_nodes  # type: ignore[attr-defined]
    add.add_argument("pod", metavar="NAME", help="the new pod's name (lowercase, digits, '-')")
    ls = subcommands.add_parser("ls", parents=common, help="list the pods")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    delete = subcommands.add_parser("del", parents=common, help="delete a pod (DEL, then remove)")
    delete.add_argument("pod", metavar="NAME", help="the pod to delete (`lab pod ls`)"
                        ).completer = complete_pods  # type: ignore[attr-defined]
    delete.add_argument("--node", default=None,
                        help="the pod's node, once a `lab cni del` left no cached attachment")
    run_in = subcommands.add_parser("exec", parents=common, help="run a command in a pod",
                                    description="Run CMD inside pod NAME's network namespace "
                                                "(or container) and pass its exit code on.")
    run_in.add_argument("pod", metavar="NAME", help="the pod (`lab pod ls`)"
                        ).completer = complete_pods  # type: ignore[attr-defined]
    run_in.add_argument("argv", metavar="CMD", nargs="*",
                        help="the command, after -- (needed once it has options of its own)")
    run_in.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    return p


def leftover_nodes(cluster: Cluster, name: str) -> list[str]:
    """Nodes where pod `name`'s namespace is still there although no attachment is cached
    (after `lab cni del`): the pod a user means, which only --node can reach."""
    detached = getattr(cluster, "detached_pod", None)
    if detached is None:
        return []
    found = []
    for node in cluster.nodes():
        try:
            detached(name, node.name)
        except LabError:
            continue
        found.append(node.name)
    return found


def find_pod(cluster: Cluster, name: str) -> Pod:
    pods = {pod.name: pod for pod in cluster.pods()}
    if name in pods:
        return pods[name]
    known = ", ".join(sorted(pods)) or "none"
    left = leftover_nodes(cluster, name)
    if left:
        # netns nodes share /run/netns: every node "has" it, so the user must say which
        node = left[0] if len(left) == 1 else "NODE"
        raise LabError(f"pod {name!r} has no attachment in lab {cluster.name} (DELeted by "
                       "hand), but its namespace is still there",
                       hint=f"name its node: `lab cni add {name} --node {node}` re-attaches "
                            f"it, `lab pod del {name} --node {node}` removes it")
    raise LabError(f"no pod {name!r} in lab {cluster.name}", hint=f"pods: {known}")


def describe(pod: Pod) -> dict[str, Any]:
    ips = getattr(pod, "ips", None) or ({6 if ":" in pod.ip else 4: pod.ip} if pod.ip else {})
    return {"name": pod.name, "node": pod.node, "ifname": pod.ifname, "ip": pod.ip,
            "ips": [ips[v] for v in sorted(ips)],
            "container_id": pod.attachment.container_id}


COLUMNS = ("name", "node", "ifname", "ips", "container_id")


def table(pods: list[dict[str, Any]]) -> list[str]:
    """`pod ls` as text: a header, then one line a pod (every family's address)."""
    rows = [[str(c).upper() if c != "ips" else "ADDRESSES" for c in COLUMNS]]
    rows += [[",".join(p[c]) if c == "ips" else str(p[c]) for c in COLUMNS] for p in pods]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    return ["  ".join([*(r[i].ljust(widths[i]) for i in range(len(widths))), r[-1]])
            for r in rows]


def run(args: argparse.Namespace) -> int:
    with lab_from(args) as lab:
        cluster = lab.cluster()
        if args.pod_command == "add":
            pod = cluster.create_pod(args.pod, args.node)
            row = describe(pod)
            print(f"{pod.name}\t{pod.node}\t{pod.ifname}\t{','.join(row['ips'])}")
        elif args.pod_command == "del":
            known = {p.name for p in cluster.pods()}
            detached = getattr(cluster, "detached_pod", None)
            if args.node and args.pod not in known and detached is not None:
                pod = detached(args.pod, args.node)
            else:
                pod = find_pod(cluster, args.pod)
            cluster.delete_pod(pod)
            print(f"✓ removed pod {pod.name} from {pod.node} (DEL of its {pod.ifname} "
                  "attachment, then its namespace)", file=sys.stderr)
        elif args.pod_command == "exec":
            return exec_in_pod(cluster, args)
        else:
            pods = [describe(p) for p in sorted(cluster.pods(), key=lambda p: p.name)]
            if args.json:
                print(json.dumps(pods, indent=2))
            elif pods:
                print("\n".join(table(pods)))
            else:
                print(f"no pods in lab {cluster.name} (`lab pod add NODE NAME` makes one)")
    return 0


def exec_in_pod(cluster: Cluster, args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise LabError("no command given", hint=f"lab pod exec {args.pod} -- ip addr")
    pod = find_pod(cluster, args.pod)
    result = pod.exec(argv, timeout=args.timeout)
    sys.stdout.write(result.stdout)
    stderr, rc = not_found(result.stderr, result.rc, argv[0], f"pod {pod.name}")
    sys.stderr.write(stderr)
    return rc


def not_found(stderr: str, rc: int, program: str, where: str) -> tuple[str, int]:
    """A missing program said in lab's words rather than the wrapper's, with the shell's rc
    127: `command not found: X on node1`."""
    p = re.escape(program)
    wrappers = (rf"nsenter: failed to execute {p}: No such file or directory",   # netns node
                rf'exec of "{p}" failed: No such file or directory',   # ip netns exec (rc 1)
                rf"(ba)?sh: (\d+: )?{p}: (command )?not found")           # a shell over SSH
    if rc in (1, 127) and any(re.fullmatch(w, stderr.strip()) for w in wrappers):
        return f"✗ command not found: {program} on {where}\n", 127
    return stderr, rc
