"""How long VM labs take: provision start to every node answering SSH (1 and 3 VMs, cached
image), naming the accelerator; `lab down` (destroy); and a fresh image build.

    sudo .venv/bin/python bench/vm_bench.py [--nodes 1 3] [--build] [--json]

Each lab gets a throw-away name (t5b<random>) and a 192.168.x.0/24 no route uses. `--build`
builds the image into a temporary cache (the real cache is left alone) and removes it after.
Destroy runs even when provisioning fails.
"""
from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.config import LabConfig, parse_config  # noqa: E402
from lab.nodes.providers.libvirt.image_build import build_image  # noqa: E402
from lab.nodes.providers.libvirt.provider import LibvirtProvider  # noqa: E402


def _free_subnet() -> IPv4Network:
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=False).stdout
    used = [IPv4Network(w, strict=False) for w in routes.split() if w[:1].isdigit() and "/" in w]
    for third in range(200, 250):
        candidate = IPv4Network(f"192.168.{third}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise SystemExit("no free 192.168.x.0/24 for the bench lab")


def _lab_config(state_dir: Path, nodes: int) -> LabConfig:
    return parse_config({
        "lab": {"name": "t5b" + secrets.token_hex(3), "provider": "libvirt",
                "state_dir": str(state_dir)},
        "nodes": [{"name": f"n{i + 1}"} for i in range(nodes)],
        "network": {"underlay": str(_free_subnet())},
        "plugin": {"path": "/bin/true"},
        "libvirt": {"memory_mib": 768, "boot_timeout": 600},
    })


def bench_lab(nodes: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="cnilab-vm-bench-") as tmp:
        provider = LibvirtProvider(_lab_config(Path(tmp), nodes), report=lambda m: None)
        result: dict[str, object] = {"nodes": nodes}
        try:
            started = time.monotonic()
            lab_nodes = provider.provision()
            result["up_to_ssh_s"] = round(time.monotonic() - started, 1)
            result["accel"] = provider.accel.accel if provider.accel else "?"
            result["accel_reason"] = provider.accel.reason if provider.accel else ""
            for node in lab_nodes:
                node.run(["true"]).check(node.name)
                getattr(node, "close", lambda: None)()
        finally:
            started = time.monotonic()
            provider.destroy()
            result["down_s"] = round(time.monotonic() - started, 1)
            provider.close()
        return result


def bench_build() -> dict[str, object]:
    cache = Path(tempfile.mkdtemp(prefix="cnilab-image-bench-", dir="/var/tmp"))
    try:
        built, seconds = build_image(cache, force=True, report=lambda m: None)
        size = built.disk.stat().st_size
        return {"build_s": round(seconds or 0, 1), "disk_mib": size >> 20}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--build", action="store_true", help="also time a fresh image build")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    subprocess.run(["bash", str(ROOT / "scripts" / "start-services.sh")], check=False)
    build_image(report=lambda m: print(f"  {m}", file=sys.stderr))   # labs use a cached image
    results: dict[str, object] = {"labs": []}
    if args.build:
        results["image_build"] = bench_build()
        if not args.json:
            b = results["image_build"]
            print(f"image build: {b['build_s']} s ({b['disk_mib']} MiB qcow2)")  # type: ignore[index]
    for n in args.nodes:
        r = bench_lab(n)
        results["labs"].append(r)  # type: ignore[attr-defined]
        if not args.json:
            print(f"{n} VM(s): up to SSH {r.get('up_to_ssh_s', 'failed')} s "
                  f"[{r.get('accel', '?')}], down {r['down_s']} s")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
