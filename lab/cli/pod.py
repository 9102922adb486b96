"""`lab pod add|del|ls`: pods on the lab's nodes by hand, through the same runtime the
scenarios use (namespaces + libcni-like calls on netns/VM labs, Kubernetes pods on K3s).

    lab pod add NODE NAME      a pod on NODE attached to the network under test
    lab pod ls [--json]        the pods, their node, interface and address
    lab pod del NAME           DEL and remove it (DEL twice is fine)
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from lab.api import Cluster, LabError, Pod
from lab.cli._common import lab_from


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "pod", help="add, list and delete pods by hand",
        description="Pods on the lab's nodes, attached to the network under test by the lab's "
                    "runtime (the one the scenarios use).")
    common = [subparsers.common] if hasattr(subparsers, "common") else []
    subcommands = p.add_subparsers(dest="pod_command", metavar="SUBCOMMAND", required=True)
    add = subcommands.add_parser("add", parents=common, help="a new pod on NODE")
    add.add_argument("node", metavar="NODE")
    add.add_argument("pod", metavar="NAME")
    ls = subcommands.add_parser("ls", parents=common, help="list the pods")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    delete = subcommands.add_parser("del", parents=common, help="delete a pod (DEL, then remove)")
    delete.add_argument("pod", metavar="NAME")
    delete.add_argument("--node", default=None,
                        help="the pod's node, once a `lab cni del` left no cached attachment")
    return p


def find_pod(cluster: Cluster, name: str) -> Pod:
    pods = {pod.name: pod for pod in cluster.pods()}
    if name not in pods:
        known = ", ".join(sorted(pods)) or "none"
        raise LabError(f"no pod {name!r} in lab {cluster.name}", hint=f"pods: {known}")
    return pods[name]


def describe(pod: Pod) -> dict[str, str]:
    return {"name": pod.name, "node": pod.node, "ifname": pod.ifname, "ip": pod.ip,
            "container_id": pod.attachment.container_id}


def run(args: argparse.Namespace) -> int:
    with lab_from(args) as lab:
        cluster = lab.cluster()
        if args.pod_command == "add":
            pod = cluster.create_pod(args.pod, args.node)
            print(f"{pod.name}\t{pod.node}\t{pod.ifname}\t{pod.ip}")
        elif args.pod_command == "del":
            detached = getattr(cluster, "detached_pod", None)
            known = {p.name for p in cluster.pods()}
            if args.node and args.pod not in known and detached is not None:
                cluster.delete_pod(detached(args.pod, args.node))
            else:
                cluster.delete_pod(find_pod(cluster, args.pod))
        else:
            pods = [describe(p) for p in sorted(cluster.pods(), key=lambda p: p.name)]
            if args.json:
                print(json.dumps(pods, indent=2))
            else:
                for p in pods:
                    print("\t".join(p[k] for k in ("name", "node", "ifname", "ip",
                                                   "container_id")))
    return 0
