"""How long `lab up` and `lab down` take for 3, 10 and 50 netns nodes (target: 3 nodes up < 2 s).

    sudo .venv/bin/python bench/lab_bench.py [--nodes 3 10 50] [--runs 5] [--json]

Two views per size: the `lab` command as a user runs it (a new process: Python start, imports,
config, provisioning, plugin install) and the provisioning alone, in-process. Each lab gets its
own throw-away name (b3<random>) and a plugin stand-in (a shell script that answers VERSION:
what is timed is the lab, not a plugin build). `lab down` runs even when a step fails.
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LAB = [sys.executable, "-c", "from lab.cli import main_entry; main_entry()"]
TARGET_UP_3 = 2.0


def stand_in(directory: Path) -> Path:
    """A plugin that answers VERSION (`lab up` asks it) and nothing else."""
    plugin = directory / "stand-in-plugin"
    plugin.write_text('#!/bin/sh\necho \'{"cniVersion": "1.1.0", "supportedVersions": '
                      '["1.0.0", "1.1.0"]}\'\n')
    plugin.chmod(0o755)
    return plugin


def write_config(directory: Path, name: str, nodes: int) -> Path:
    path = directory / f"{name}.toml"
    node_tables = "".join(f'[[nodes]]\nname = "node{i + 1}"\n' for i in range(nodes))
    path.write_text(textwrap.dedent(f"""\
        [lab]
        name = "{name}"
        state_dir = "{directory / name}"
        [network]
        underlay = "10.99.0.0/24"
        pod_cidr = "10.244.0.0/16"
        [plugin]
        path = "{stand_in(directory)}"
        type = "cnilab"
        """) + node_tables)
    return path


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
    return took


def bench_cli(nodes: int, runs: int, tmp: Path) -> dict[str, list[float]]:
    ups, reups, downs = [], [], []
    for _ in range(runs):
        name = "b3" + secrets.token_hex(3)
        config = str(write_config(tmp, name, nodes))
        try:
            ups.append(timed([*LAB, "-c", config, "up"]))
            reups.append(timed([*LAB, "-c", config, "up"]))   # idempotent re-run
        finally:
            downs.append(timed([*LAB, "-c", config, "down"]))
    return {"cli_up": ups, "cli_up_again": reups, "cli_down": downs}


def bench_provider(nodes: int, runs: int, tmp: Path) -> dict[str, list[float]]:
    from lab.config import load_config
    from lab.nodes.providers.netns import NetnsProvider

    ups, downs = [], []
    for _ in range(runs):
        name = "b3" + secrets.token_hex(3)
        provider = NetnsProvider(load_config(write_config(tmp, name, nodes)))
        try:
            start = time.perf_counter()
            provider.provision()
            ups.append(time.perf_counter() - start)
        finally:
            start = time.perf_counter()
            provider.destroy()
            downs.append(time.perf_counter() - start)
    return {"provision": ups, "destroy": downs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[3, 10, 50])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="cnilab-bench-") as tmp:
        for nodes in args.nodes:
            results[nodes] = {**bench_cli(nodes, args.runs, Path(tmp)),
                              **bench_provider(nodes, args.runs, Path(tmp))}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'nodes':>5} {'step':<13} {'median s':>9} {'min s':>7} {'max s':>7}"
              f"  (runs={args.runs})")
        for nodes, steps in results.items():
            for step, times in steps.items():
                print(f"{nodes:>5} {step:<13} {statistics.median(times):>9.3f} "
                      f"{min(times):>7.3f} {max(times):>7.3f}")
    up3 = results.get(3, {}).get("cli_up")
    if up3:
        verdict = "met" if statistics.median(up3) < TARGET_UP_3 else "MISSED"
        print(f"target: 3 nodes `lab up` < {TARGET_UP_3} s: {verdict} "
              f"(median {statistics.median(up3):.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
