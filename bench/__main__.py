"""`python -m bench <what>`: plugin (ADD/CHECK/DEL vs ptp), lab (up/down), scenario (suite),
vm (libvirt boot to SSH), k8s (lab deploy, lab up phases on K3s), podman (container-node labs:
up, suites, down)."""
from __future__ import annotations

import sys

USAGE = """usage: python -m bench {plugin,lab,scenario,vm,k8s,podman} [options]

  plugin    cnilab ADD/CHECK/DEL vs the reference ptp, serial and 4 in parallel
  lab       `lab up`/`lab down` times for netns labs (bench/lab_bench.py)
  scenario  scenario suite wall time (bench/scenario_bench.py)
  vm        libvirt VMs: provision to SSH for 1 and 3 nodes, image build, destroy
  k8s       K3s labs: `lab deploy` vs the former way, `lab up` per phase (bench/k8s_bench.py)
  podman    container-node labs: `lab up` per phase, scenario suites, `lab down`, leftovers
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    what, rest = argv[0], argv[1:]
    if what == "plugin":
        from bench import plugin_bench

        return plugin_bench.main(rest)
    if what in ("lab", "scenario", "vm", "k8s", "podman"):
        import importlib

        module = importlib.import_module(f"bench.{what}_bench")
        sys.argv = [f"python -m bench {what}", *rest]  # those read sys.argv themselves
        return int(module.main() or 0)
    print(f"unknown benchmark {what!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
