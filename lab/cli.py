"""The `lab` command: argparse front, one module per subcommand (lab/commands/COMMANDS).

`main(argv) -> int` never exits (tests call it); `main_entry()` is the console script.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from lab.api import LabError
from lab.commands import COMMANDS


class _Subparsers:
    """Hands every subcommand the global options too, so `lab up -c x.toml` works like
    `lab -c x.toml up` (SUPPRESS keeps a value given before the subcommand)."""

    def __init__(self, actions: Any, common: argparse.ArgumentParser) -> None:
        self._actions, self._common = actions, common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs["parents"] = [*kwargs.get("parents", []), self._common]
        parser: argparse.ArgumentParser = self._actions.add_parser(name, **kwargs)
        return parser


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS
    parser.add_argument("-c", "--config", type=Path,
                        default=default if suppress else Path("lab.toml"),
                        help="lab config (default: ./lab.toml)")
    parser.add_argument("--name", default=default if suppress else None,
                        help="lab name, overriding [lab] name (two labs from one config)")


def _command_module(name: str) -> ModuleType | None:
    module_name = f"lab.commands.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:   # listed but not written yet: no such subcommand
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab", description="Bring a multi-node CNI lab up, inspect it, take it down.")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    actions = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subparsers = _Subparsers(actions, common)
    for name in COMMANDS:
        module = _command_module(name)
        if module is None:
            continue
        sub = module.add_parser(subparsers)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:          # --help, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        rc: int = args.run(args)
        return rc
    except LabError as e:
        print(f"✗ {e.describe()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("✗ interrupted", file=sys.stderr)
        return 130


def main_entry() -> None:
    sys.exit(main())
