"""The Kubernetes inner loop and bring-up, on a running (or a throw-away) K3s lab.

    .venv/bin/python -m bench k8s deploy -c examples/k3s-libvirt-airgap.toml [--runs 5]
    .venv/bin/python -m bench k8s up -c examples/k3s-libvirt-airgap.toml     # up, phases, down

deploy: `lab deploy` as a user runs it (a new process), each run a real change: two builds
alternate that differ as a developer's edit does (one line in one module: other bytes, another
BUILD_ID).
Beside it, in the same run and on the same lab, the reference: the way `lab deploy` worked
before (each node's plugin copied over SFTP, the NAD applied by `k3s kubectl` on the server).
up: `lab up` of the config under its own lab name (not beside a lab of the same config: the
underlay would clash), the time of each phase from its progress lines, then `lab down`.
"""
from __future__ import annotations

import argparse
import json
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = [sys.executable, "-c", "from lab.cli import main_entry; main_entry()"]
TARGET_DEPLOY_SECONDS = 3.0


def _lab(config: Path, *args: str, timeout: float = 1800) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([*LAB, *args, "-c", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"lab {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return took, done.stdout + done.stderr


def _variants(tmp: Path, config: Path) -> list[Path]:
    """Two configs, identical but for plugin.path: two builds that differ the way a
    developer's change does (one comment line more in plugin/cni/commands.py)."""
    import shutil

    made = []
    text = config.read_text()
    for i in range(2):
        tree = tmp / f"tree{i}"
        shutil.copytree(ROOT / "plugin", tree / "plugin",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copyfile(ROOT / "pyproject.toml", tree / "pyproject.toml")   # the pin
        if i:
            with (tree / "plugin" / "cni" / "commands.py").open("a") as f:
                f.write("# a developer's change\n")
        plugin = tmp / f"variant{i}" / "cnilab"
        subprocess.run([sys.executable, "-m", "plugin.build", "-o", str(plugin)],
                       cwd=tree, check=True, capture_output=True)
        copy = tmp / f"variant{i}.toml"
        copy.write_text(re.sub(r'(?m)^path = "[^"]*"', f'path = "{plugin}"', text, count=1)
                        .replace("[lab]\n", f"[lab]\n# bench copy of {config}\n", 1))
        made.append(copy)
    return made


def reference_deploy(config_path: Path) -> float:
    """The former `lab deploy`: per node a SFTP copy (and the primary conflist), then
    `k3s kubectl apply` of the NAD."""
    from lab.api import ActionContext, Node
    from lab.cluster.session import Lab
    from lab.config import load_config
    from lab.kube import k3s_install, multus_install, nad, remote

    start = time.perf_counter()
    with Lab(load_config(config_path)) as lab:
        config, nodes = lab.config, lab.nodes()
        ctx = ActionContext(config=config, nodes=nodes, state_dir=Path("."))
        dirs = multus_install.cluster_cni_dirs(ctx)
        spec = multus_install.kube_network_spec(config, nodes, dirs)
        settings = k3s_install.k3s_settings(ctx)

        def place(node: Node) -> None:
            node.put_file(config.plugin_path, f"{dirs[node.name].bin_dir}/{spec.plugin_type}",
                          0o755)
            if settings.primary:
                conflist = nad.primary_conflist(spec.configs[node.name])
                remote.write_file(node, f"{dirs[node.name].conf_dir}/"
                                   f"{nad.primary_conflist_name(spec)}", json.dumps(conflist))

        remote.parallel(nodes, place)
        if not settings.primary:
            server, _ = k3s_install.split_roles(config, nodes)
            remote.apply(server, [multus_install.namespace_manifest(settings.namespace),
                                   nad.nad_manifest(spec, settings.namespace)], "the NAD")
    return time.perf_counter() - start


def bench_deploy(config: Path, runs: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="cnilab-bench-") as tmp:
        variants = _variants(Path(tmp), config.absolute())
        ours, reference = [], []
        _lab(variants[0], "deploy")    # untimed: whatever the nodes had, variant 1 is a change
        for run in range(runs):
            took, out = _lab(variants[(run + 1) % 2], "deploy")
            if "0 replaced" in out:
                raise SystemExit(f"lab deploy replaced nothing: not a real change\n{out}")
            ours.append(took)
            reference.append(reference_deploy(variants[(run + 1) % 2]))  # copies it again
        _lab(config, "deploy")        # the lab's own plugin again
    return {"lab deploy": ours, "reference (SFTP + kubectl)": reference}


def bench_up(config: Path) -> dict[str, float]:
    from lab.config import load_config

    name = "bk" + secrets.token_hex(3)
    text = config.read_text()
    with tempfile.TemporaryDirectory(prefix="cnilab-bench-") as tmp:
        copy = Path(tmp) / "lab.toml"
        copy.write_text(re.sub(r'(?m)^name = "[a-z0-9_]+"$', f'name = "{name}"', text, count=1)
                        .replace('path = "dist/cnilab"', f'path = "{ROOT}/dist/cnilab"'))
        load_config(copy)
        try:
            total, out = _lab(copy, "up")
        finally:
            down, _ = _lab(copy, "down", timeout=600)
    phases = {m.group(1): float(m.group(2))
              for m in re.finditer(r"(?m)^✓ (.+?) \(([\d.]+)s\)$", out)}
    return {**phases, "lab up (total)": round(total, 1), "lab down": round(down, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["deploy", "up"])
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.what == "up":
        phases = bench_up(args.config)
        if args.json:
            print(json.dumps(phases, indent=2))
        else:
            for phase, seconds in phases.items():
                print(f"{seconds:8.1f} s  {phase}")
        return 0
    results = bench_deploy(args.config, args.runs)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'':<28} {'median s':>9} {'min s':>7} {'max s':>7}  (runs={args.runs})")
    for what, times in results.items():
        print(f"{what:<28} {statistics.median(times):>9.2f} {min(times):>7.2f} "
              f"{max(times):>7.2f}")
    ours = statistics.median(results["lab deploy"])
    verdict = "met" if ours < TARGET_DEPLOY_SECONDS else "MISSED"
    print(f"target: `lab deploy` < {TARGET_DEPLOY_SECONDS} s: {verdict} (median {ours:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
