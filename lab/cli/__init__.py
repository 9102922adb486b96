"""The `lab` command: argparse front, one module per subcommand (lab/cli/SUBCOMMANDS).

`main(argv) -> int` never exits (tests call it); `main_entry()` is the console script.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from lab.api import LabError

# One module per subcommand in this folder: `add_parser(subparsers)` and `run(args) -> int`;
# heavy imports (libvirt, paramiko, kubernetes) stay inside functions so `lab --help` is fast.
SUBCOMMANDS = [
    "up", "down", "status", "exec", "logs", "ls",   # lab core
    "pod", "cni",                              # pods and CNI calls by hand
    "image",                                   # libvirt images
    "ssh",                                     # SSH nodes
    "deploy", "kubeconfig",                    # K3s / Multus
    "completion",                              # shell completion
]


class _Subparsers:
    """Hands every subcommand the global options too, so `lab up -c x.toml` works like
    `lab -c x.toml up` (SUPPRESS keeps a value given before the subcommand)."""

    def __init__(self, subcommands: Any, common: argparse.ArgumentParser) -> None:
        self._subcommands, self.common = subcommands, common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs["parents"] = [*kwargs.get("parents", []), self.common]
        parser: argparse.ArgumentParser = self._subcommands.add_parser(name, **kwargs)
        return parser


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """(lab's own arguments, the node's command after the first `--`, or None). Parsed apart,
    `lab exec NODE -c CFG -- cmd` keeps -c for lab: argparse's REMAINDER would take it."""
    if "--" not in argv:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS
    parser.add_argument("-c", "--config", type=Path,
                        default=default if suppress else Path("lab.toml"),
                        help="lab config (default: ./lab.toml)")
    parser.add_argument("--name", default=default if suppress else None,
                        help="lab name, overriding [lab] name (two labs from one config)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cnilab")
    except PackageNotFoundError:   # run from a checkout that was never installed
        return "unknown (not installed)"


def _command_module(name: str) -> ModuleType | None:
    module_name = f"lab.cli.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:   # listed but not written yet: no such subcommand
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab", description="Bring a multi-node CNI lab up, inspect it, take it down.")
    parser.add_argument("--version", action="version", version=f"lab (cnilab) {_version()}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    subcommands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    subparsers = _Subparsers(subcommands, common)
    for name in SUBCOMMANDS:
        module = _command_module(name)
        if module is None:
            continue
        sub = module.add_parser(subparsers)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C is answered the same wherever it lands: while the subcommands (and what they
    # import: paramiko, libvirt, kubernetes) load, while parsing, or while one runs.
    try:
        parser = build_parser()
        if argv is None and "_ARGCOMPLETE" in os.environ:   # a shell asking for completions
            import argcomplete

            argcomplete.autocomplete(parser)     # answers and exits
        own, command = split_command(list(argv) if argv is not None else sys.argv[1:])
        try:
            args = parser.parse_args(own)
        except SystemExit as e:          # --help, or a usage error argparse already printed
            if e.code == 2 and command is None and {"exec", "ssh"} & set(own):
                print("hint: a command with options of its own goes after --: "
                      "lab exec NODE -- ip -br addr", file=sys.stderr)
            return e.code if isinstance(e.code, int) else 2
        if command is not None:
            if not hasattr(args, "argv"):    # only exec, ssh and pod exec take a command
                print(f"lab {args.command}: unexpected arguments after --: "
                      f"{' '.join(command)}", file=sys.stderr)
                return 2
            args.argv = [*args.argv, *command]
        try:
            rc: int = args.run(args)
            return rc
        except LabError as e:
            print(f"✗ {e.describe()}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("✗ interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # Ctrl-C inside an import can surface wrapped (a class body's __set_name__ raises
        # RuntimeError from the KeyboardInterrupt): still an interrupt, never a traceback.
        if not _caused_by_interrupt(e):
            raise
        print("✗ interrupted", file=sys.stderr)
        return 130


def _caused_by_interrupt(error: BaseException) -> bool:
    seen: BaseException | None = error
    for _ in range(20):       # a cause chain is short; never loop on a cycle
        if seen is None:
            return False
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def main_entry() -> None:
    try:
        code = main()
    except KeyboardInterrupt:  # between two handlers: still no traceback
        code = 130
    except BrokenPipeError:    # `lab … | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    sys.exit(code)
