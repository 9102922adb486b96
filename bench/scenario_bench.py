"""How long the full scenario suite takes on 3 netns nodes, and what pods get of the wire.

    sudo .venv/bin/python bench/scenario_bench.py [--config examples/netns-hostgw.toml] [--runs 3]

Brings a throw-away lab up (own name), runs `pytest scenarios/` as a user would, reads the
junit XML: wall time of the suite (target < 15 s, issue 19), per-test outcome counts, and the iperf3
pod->pod vs node->node numbers the cross-node throughput scenario records. `lab down` always.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAB = [sys.executable, "-c", "from lab.cli import main_entry; main_entry()"]
THROUGHPUT_TEST = "test_cross_node_throughput_pod_to_pod_vs_node_to_node"
TARGET_SECONDS = 15.0


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def run_suite(config: Path, name: str, junit: Path, logs: Path) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "scenarios/",
                    "--lab-config", str(config), "--lab-name", name, f"--junitxml={junit}",
                    f"--lab-logs-dir={logs}", "-q"],
                   cwd=ROOT, capture_output=True, text=True, timeout=900)
    return time.monotonic() - start


def read_junit(junit: Path) -> dict[str, Any]:
    counts = {"passed": 0, "failure": 0, "error": 0, "skipped": 0}
    props: dict[str, float] = {}
    for case in ET.parse(junit).iter("testcase"):
        tags = {child.tag for child in case}
        counts[next((t for t in ("failure", "error", "skipped") if t in tags), "passed")] += 1
        if case.get("name") == THROUGHPUT_TEST:
            for prop in case.iter("property"):
                with contextlib.suppress(ValueError):
                    props[prop.get("name", "")] = float(prop.get("value", ""))
    return {"outcomes": counts, "throughput": props}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = ROOT / "examples" / ("netns-hostgw.toml" if (ROOT / "dist" / "cnilab").exists()
                                   else "netns-ptp.toml")
    parser.add_argument("--config", type=Path, default=default)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2

    name = f"t4b{secrets.token_hex(2)}"  # lab names: letters/digits, no "-"
    common = ["-c", str(args.config), "--name", name]
    runs: list[dict[str, Any]] = []
    try:
        up = _lab("up", *common)
        if up.returncode != 0:
            print(f"lab up failed:\n{up.stdout}{up.stderr}", file=sys.stderr)
            return 1
        with tempfile.TemporaryDirectory(prefix="cnilab-bench-") as tmp:
            for i in range(args.runs):
                junit = Path(tmp) / f"run{i}.xml"
                seconds = run_suite(args.config, name, junit, Path(tmp) / "logs")
                runs.append({"seconds": round(seconds, 2), **read_junit(junit)})
    finally:
        _lab("down", *common)

    times = [r["seconds"] for r in runs]
    summary = {
        "config": str(args.config), "nodes": 3, "runs": runs,
        "suite_seconds_median": round(statistics.median(times), 2),
        "target_seconds": TARGET_SECONDS,
        "pod_over_node_ratio": runs[-1]["throughput"].get("pod_over_node_ratio"),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"scenario suite on 3 netns nodes ({args.config.name})")
    for i, run in enumerate(runs):
        o, t = run["outcomes"], run["throughput"]
        print(f"  run {i + 1}: {run['seconds']:6.2f} s  passed {o['passed']} failed "
              f"{o['failure']} errors {o['error']} skipped {o['skipped']}")
        if t:
            print(f"          iperf3 pod->pod {t.get('pod_to_pod_gbits', 0):.2f} Gbit/s, "
                  f"node->node {t.get('node_to_node_gbits', 0):.2f} Gbit/s, "
                  f"ratio {t.get('pod_over_node_ratio', 0):.3f}")
    verdict = "within" if summary["suite_seconds_median"] < TARGET_SECONDS else "OVER"
    print(f"  median {summary['suite_seconds_median']} s ({verdict} the {TARGET_SECONDS:.0f} s "
          "target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
