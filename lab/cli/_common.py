"""Helpers the subcommands share: load the config and the provider from parsed arguments."""
from __future__ import annotations

import argparse

from lab.cluster.session import Lab
from lab.config import LabConfig, load_config


def config_from(args: argparse.Namespace) -> LabConfig:
    return load_config(args.config, args.name)


def lab_from(args: argparse.Namespace) -> Lab:
    return Lab(config_from(args))
