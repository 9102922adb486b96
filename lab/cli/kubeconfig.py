"""`lab kubeconfig [--merge]`: where the lab's kubeconfig is; optionally merged into
~/.kube/config (or the first file of $KUBECONFIG) under the context cnilab-<lab>."""
from __future__ import annotations

import argparse
from typing import Any

from lab.api import LabError
from lab.cli._common import lab_from


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "kubeconfig", help="print the path of the lab's kubeconfig (K3s labs)",
        description="Print the path of the lab's kubeconfig (0600, pointed at the K3s server). "
                    "Use it as `kubectl --kubeconfig $(lab kubeconfig) get nodes`.")
    p.add_argument("--merge", action="store_true",
                   help="also merge it into ~/.kube/config (the current context is kept)")
    p.add_argument("--refresh", action="store_true",
                   help="fetch it again from the server node first")
    return p


def run(args: argparse.Namespace) -> int:
    from lab.kube import kubeconfig
    from lab.kube.k3s_install import split_roles

    lab = lab_from(args)
    config = lab.config
    if config.k3s is None:
        raise LabError(f"lab {lab.name} has no [k3s] section, so no kubeconfig",
                       hint="add [k3s] (see examples/k3s-libvirt.toml) and run `lab up`")
    path = kubeconfig.state_path(config.harness_dir)
    if args.refresh or not path.exists():
        server, _ = split_roles(config, lab.nodes())
        path = kubeconfig.fetch(server, config.harness_dir, config.name)
    if args.merge:
        target = kubeconfig.merge_into_user_config(path)
        print(f"merged as context {kubeconfig.context_name(config.name)} into {target}")
    print(path)
    return 0
