"""`lab completion bash|zsh|fish`: the shell code that completes lab's commands and options.

    eval "$(lab completion bash)"      # in ~/.bashrc (zsh: the same with zsh)

argcomplete generates it from the argparse tree, so every subcommand and option completes,
and new ones need nothing here.
"""
from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "completion", help="print shell completion code (eval it in your shell's rc file)",
        description='Shell completion for lab: eval "$(lab completion bash)"')
    p.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell to complete in")
    return p


def run(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode(["lab"], shell=args.shell))
    return 0
