"""`lab pod add|del|ls|exec`: pods on the lab's nodes by hand, through the same runtime the
scenarios use (namespaces + libcni-like calls on netns/VM labs, Kubernetes pods on K3s).

    lab pod add NODE NAME      a pod on NODE attached to the network under test; on netns/VM
                               labs with CNI_ARGS (--cni-args) and capability arguments
                               (--port, --mac, --ip, --bandwidth) as libcni passes them, and
                               --ifname (a pod that exists gets one more attachment)
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
from lab.cli.attach_options import attach_options


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
    runtime = add.add_argument_group(
        "what the runtime passes (netns/VM labs)",
        "capability arguments reach a plugin as runtimeConfig only when its config declares "
        "the capability, e.g. capabilities = { portMappings = true } (libcni's rule)")
    runtime.add_argument("--cni-args", metavar="K=V;...", default=None,
                         help="CNI_ARGS pairs after the runtime's own, e.g. 'IP=10.244.0.50'")
    runtime.add_argument("--port", metavar="HOST:POD[/PROTO]", action="append", default=[],
                         help="a portMappings entry (repeatable), e.g. 8080:80/tcp")
    runtime.add_argument("--mac", default=None, help="the mac capability, e.g. 02:00:00:00:00:42")
    runtime.add_argument("--ip", metavar="IP", action="append", default=[],
                         help="the ips capability (repeatable), e.g. 10.244.0.50")
    runtime.add_argument("--bandwidth", metavar="in=RATE,out=RATE", default=None,
                         help="the bandwidth capability in bit/s (k, M, G), e.g. in=10M")
    runtime.add_argument("--ifname", default=None,
                         help="CNI_IFNAME of the attachment; for a pod that exists, one more "
                              "attachment into its namespace, e.g. net2")
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


def find_pod(cluster: Cluster, name: str, ifname: str | None = None) -> Pod:
    """The pod `name`, by the attachment on `ifname` when given (else its first one)."""
    every = cluster.pods()
    attachments = [p for p in every if p.name == name]
    if attachments and ifname is not None:
        chosen = [p for p in attachments if p.ifname == ifname]
        if not chosen:
            raise LabError(f"pod {name} has no attachment on {ifname}",
                           hint="its interfaces: " + ", ".join(p.ifname for p in attachments))
        return chosen[0]
    if attachments:
        return sorted(attachments, key=lambda p: p.ifname != _first_ifname(cluster))[0]
    known = ", ".join(sorted({pod.name for pod in every})) or "none"
    left = leftover_nodes(cluster, name)
    if left:
        # netns nodes share /run/netns: every node "has" it, so the user must say which
        node = left[0] if len(left) == 1 else "NODE"
        raise LabError(f"pod {name!r} has no attachment in lab {cluster.name} (DELeted by "
                       "hand), but its namespace is still there",
                       hint=f"name its node: `lab cni add {name} --node {node}` re-attaches "
                            f"it, `lab pod del {name} --node {node}` removes it")
    raise LabError(f"no pod {name!r} in lab {cluster.name}", hint=f"pods: {known}")


def _first_ifname(cluster: Cluster) -> str:
    spec = getattr(cluster, "spec", None)
    return str(getattr(spec, "ifname", "eth0"))


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
    options = attach_options(cni_args_text=args.cni_args, ports=args.port, mac_text=args.mac,
                             ips=args.ip, bandwidth_text=args.bandwidth,
                             ifname=args.ifname) \
        if args.pod_command == "add" else None     # bad input fails before the lab is read
    with lab_from(args) as lab:
        cluster = lab.cluster()
        if args.pod_command == "add":
            pod = cluster.create_pod(args.pod, args.node, options) if options else \
                cluster.create_pod(args.pod, args.node)
            row = describe(pod)
            print(f"{pod.name}\t{pod.node}\t{pod.ifname}\t{','.join(row['ips'])}")
        elif args.pod_command == "del":
            known = {p.name for p in cluster.pods()}
            detached = getattr(cluster, "detached_pod", None)
            if args.node and args.pod not in known and detached is not None:
                pod = detached(args.pod, args.node)
            else:
                pod = find_pod(cluster, args.pod)
            ifnames = sorted({p.ifname for p in cluster.pods() if p.name == pod.name}
                             | {pod.ifname})
            cluster.delete_pod(pod)
            print(f"✓ removed pod {pod.name} from {pod.node} (DEL of its {', '.join(ifnames)} "
                  f"attachment{'s' if len(ifnames) > 1 else ''}, then its namespace)",
                  file=sys.stderr)
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
