"""Container-node labs end to end: `lab up`, the scenario suites, `lab down`, per run.

    .venv/bin/python -m bench podman -c examples/k3s-podman.toml [--runs 1] [--json]
    .venv/bin/python -m bench podman -c examples/podman.toml --runs 3
    .venv/bin/python -m bench podman -c examples/k3s-podman-thick.toml --beside-libvirt

--beside-libvirt runs, after each container-node run, the same config on libvirt VMs (the
provider swapped, a [libvirt] section of 2 vCPUs and 2 GiB per node on an isolated network):
the same shape, on the same host, in the same run.

Each run brings the config up under its own lab name (a fresh cluster, as CI gets it), times
each phase of `lab up` from its progress lines, runs `pytest scenarios/` against it, takes it
down, and checks that nothing of it is left (containers, volumes, switch, host port).
Targets (issue 21, 3-node K3s + Multus on this 2-core machine): up <= 90 s, suites <= 180 s,
down <= 10 s.
"""
from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = [sys.executable, "-c", "from lab.cli import main_entry; main_entry()"]
TARGETS = {"up": 90.0, "suites": 180.0, "down": 10.0}


def _timed(argv: list[str], timeout: float) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Runs argv; past `timeout` it is killed and reported as failed (rc -9, with what it
    printed and a last line saying so), so the run still goes on to `lab down`."""
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as e:
        said = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                for x in (e.stdout, e.stderr)]
        done = subprocess.CompletedProcess(
            argv, -9, said[0], said[1] + f"\nbench: stopped after {timeout:.0f} s\n")
    return time.perf_counter() - start, done


def _phases(output: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"(?m)^✓ (.+?) \(([\d.]+)s\)$", output)}


def _leftovers(config: Path, name: str) -> list[str]:
    from lab.config import load_config
    from lab.nodes.providers.podman.provider import PodmanProvider

    return PodmanProvider(load_config(config, name)).remains()


def _vm_leftovers(config: Path, name: str) -> list[str]:
    domains = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                             capture_output=True, text=True, check=False).stdout.split()
    return [f"domain {d}" for d in domains if d.startswith(f"cnilab-{name}-")]


LIBVIRT_SECTION = ('\n[libvirt]\nimage = "cnilab-debian-12"\nforward = "isolated"\n'
                   'memory_mib = 2048\nvcpus = 2\n')


def libvirt_twin(config: Path, folder: Path) -> Path:
    """The container-node config on libvirt VMs: nothing else changed."""
    text = config.read_text()
    if 'provider = "podman"' not in text:
        raise SystemExit(f"{config}: not a container-node config (provider = \"podman\")")
    twin = folder / f"{config.stem}-libvirt.toml"
    text = text.replace('path = "dist/cnilab"', f'path = "{ROOT / "dist" / "cnilab"}"')
    twin.write_text(text.replace('provider = "podman"', 'provider = "libvirt"')
                    + LIBVIRT_SECTION)
    return twin


def one_run(config: Path, logs: Path, vm: bool = False) -> dict[str, object]:
    name = ("b21v" if vm else "b21") + secrets.token_hex(3)
    common = ["-c", str(config), "--name", name]
    up_s, up = _timed([*LAB, "up", *common], 3600 if vm else 1800)  # VMs: TCG here
    result: dict[str, object] = {"lab": name, "provider": "libvirt" if vm else "podman",
                                 "up_s": round(up_s, 1),
                                 "phases": _phases(up.stdout + up.stderr)}
    try:
        if up.returncode != 0:
            result["error"] = (up.stdout + up.stderr)[-3000:]
            kept = keep_failure_logs(up.stdout + up.stderr, logs)
            if kept:
                result["failure_logs"] = str(kept)
            return result
        report = logs / f"{name}.xml"
        suites_s, suites = _timed([sys.executable, "-m", "pytest", "scenarios/", "-q",
                                   "-p", "no:cacheprovider", "--lab-config", str(config),
                                   "--lab-name", name, f"--junitxml={report}",
                                   "--lab-logs-dir", str(logs / "lab-logs")], 3600)
        result["suites_s"] = round(suites_s, 1)
        result["suites"] = suites.stdout.strip().splitlines()[-1:]   # the pytest summary
        result["suites_ok"] = suites.returncode == 0
    finally:
        down_s, down = _timed([*LAB, "down", *common], 600)
        result["down_s"] = round(down_s, 1)
        result["down_ok"] = down.returncode == 0
        result["left"] = (_vm_leftovers if vm else _leftovers)(config, name)
    return result


def keep_failure_logs(said: str, folder: Path) -> Path | None:
    """The tarball a failed `lab up` names, copied into the bench's folder: the `lab down`
    after it removes the lab's state, logs included."""
    found = re.search(r"logs of the failed lab: (\S+)", said)
    if not found or not Path(found.group(1)).is_file():
        return None
    kept = folder / Path(found.group(1)).name
    shutil.copyfile(found.group(1), kept)
    return kept


def describe_run(run: dict[str, object]) -> str:
    lines = [f"{run['lab']} ({run['provider']}): up {run['up_s']} s, "
             f"suites {run.get('suites_s', '-')} s {run.get('suites', '')}, "
             f"down {run['down_s']} s, left {run['left'] or 'nothing'}"]
    lines += [f"    {seconds:7.1f} s  {phase}"
              for phase, seconds in dict(run.get("phases") or {}).items()]  # type: ignore[call-overload]
    if "error" in run:
        lines.append(str(run["error"]))
    if "failure_logs" in run:
        lines.append(f"  its logs, kept: {run['failure_logs']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--beside-libvirt", action="store_true",
                        help="also run the same config on libvirt VMs after each run")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-podman-"))
    twin = libvirt_twin(args.config, logs) if args.beside_libvirt else None
    runs = []
    # Each run is told as soon as it ends (on stderr under --json): a VM twin under TCG can
    # take an hour, and a run cut short must not lose the container-node figures before it.
    tell = sys.stderr if args.json else sys.stdout
    for _ in range(args.runs):
        for config, vm in ((args.config, False), *(((twin, True),) if twin else ())):
            runs.append(one_run(config, logs, vm=vm))
            print(describe_run(runs[-1]), file=tell, flush=True)
    verdict = 0 if all(r.get("suites_ok", False) and not r["left"] for r in runs) else 1
    if args.json:
        print(json.dumps(runs, indent=2))
        return verdict
    for key, target in TARGETS.items():
        for provider in ("podman", "libvirt"):
            seen = [float(r[f"{key}_s"]) for r in runs   # type: ignore[arg-type]
                    if f"{key}_s" in r and r["provider"] == provider]
            if seen:
                print(f"{key} ({provider}): {min(seen):.1f}-{max(seen):.1f} s"
                      + (f" (target <= {target:.0f} s)" if provider == "podman" else ""))
    return verdict
