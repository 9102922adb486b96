"""Helpers the subcommands share: load the config and the provider from parsed arguments."""
from __future__ import annotations

import argparse

from lab.cluster.session import Lab
from lab.config import LabConfig, load_config


def config_from(args: argparse.Namespace) -> LabConfig:
    return load_config(args.config, args.name)


def lab_from(args: argparse.Namespace) -> Lab:
    return Lab(config_from(args))


# Shell completion of positional arguments (argcomplete calls these with the arguments parsed
# so far). A completion must never fail loudly or hang the shell: any error completes nothing.
def complete_nodes(prefix: str = "", parsed_args: argparse.Namespace | None = None,
                   **_: object) -> list[str]:
    try:
        config = config_from(parsed_args) if parsed_args is not None else None
    except Exception:       # a missing or broken config: nothing to offer
        return []
    return [n.name for n in config.nodes if n.name.startswith(prefix)] if config else []


def complete_pods(prefix: str = "", parsed_args: argparse.Namespace | None = None,
                  **_: object) -> list[str]:
    if parsed_args is None:
        return []
    try:
        with lab_from(parsed_args) as lab:
            return sorted(p.name for p in lab.cluster().pods() if p.name.startswith(prefix))
    except Exception:       # no lab up, no API: nothing to offer
        return []
