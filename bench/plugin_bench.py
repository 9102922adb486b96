"""Plugin speed: ADD/CHECK/DEL of dist/cnilab against the reference ptp, in the same run.

For N pods, serial and then 4 at a time, each plugin gets the same work in namespaces this
bench makes (cnp2- prefix) and removes: a "node" namespace the bench process itself enters,
so every plugin starts exactly as a runtime on that node would start it (fork + exec with a
runtime's minimal PATH, no `ip netns exec` in the timing), and one namespace per pod.
Both use host-local with their own dataDir. cnilab's resident helper gets a private run
directory and is started (by a warm-up call) before timing and stopped at the end.

    python -m bench plugin [--pods 30] [--plugin dist/cnilab] [--mode resident|in-process]
                           [--backend none|host-gw|vxlan]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PTP = "/usr/lib/cni/ptp"
CNI_PATH = "/usr/lib/cni"
RUNTIME_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # what containerd/CRI-O hand a plugin, roughly
CLONE_NEWNET = 0x40000000
PARALLEL = 4
NODE_IP = "10.255.0.1"
PEERS = 5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Bench:
    def __init__(self, pods: int, plugin: Path, mode: str, backend: str = "none") -> None:
        self.backend = backend
        self.suffix = secrets.token_hex(3)
        self.pods = pods
        self.plugin = plugin
        self.mode = mode
        self.tmp = Path(tempfile.mkdtemp(prefix="cnp2-bench-"))
        self.node = f"cnp2-bnode-{self.suffix}"
        self.pod_ns: list[str] = []
        self.entered = False

    # --- namespaces ---------------------------------------------------------------------------
    def setup(self) -> None:
        self._ip("netns", "add", self.node)
        for i in range(self.pods + 1):  # +1: the warm-up pod
            name = f"cnp2-bpod{i}-{self.suffix}"
            self.pod_ns.append(name)
            self._ip("netns", "add", name)
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.node}", os.O_RDONLY)
        try:
            # This bench process becomes "the node": plugins inherit its namespace.
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the node namespace")
        finally:
            os.close(fd)
        self.entered = True
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        if self.backend != "none":
            # An underlay for the node IP, with the peers' addresses on-link (nobody answers:
            # we time the programming, not the traffic).
            for args in (["link", "add", "cnp2up0", "type", "veth", "peer", "name", "cnp2up1"],
                         ["addr", "add", f"{NODE_IP}/24", "dev", "cnp2up0"],
                         ["link", "set", "cnp2up0", "up"], ["link", "set", "cnp2up1", "up"]):
                subprocess.run(["ip", *args], check=True, capture_output=True)

    def teardown(self) -> None:
        if self.mode == "resident":
            subprocess.run([str(self.plugin), "--resident-stop"], env=self.env("VERSION"),
                           capture_output=True, timeout=30)
        for name in [*self.pod_ns, self.node]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    # --- configs and calls --------------------------------------------------------------------
    def conf(self, kind: str, subnet: str) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0", "name": f"cnp2bench{kind}", "type": kind,
            "ipam": {"type": "host-local", "dataDir": str(self.tmp / f"ipam-{kind}"),
                     "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]},
        }
        if kind == "cnilab" and self.mode != "resident":
            conf["resident"] = False
        if kind == "cnilab" and self.backend != "none":
            # One cluster-wide config: this node plus PEERS others; IPAM gets our podSubnet.
            conf.update(backend=self.backend, nodeName="bench", nodes=[
                {"name": "bench", "ip": NODE_IP, "podSubnet": subnet},
                *({"name": f"peer{i}", "ip": f"10.255.0.{i + 10}",
                   "podSubnet": f"10.200.{i}.0/24"} for i in range(PEERS))],
                vxlan={"vni": 4343, "port": 4799, "device": "cnp2bvx"})
            del conf["ipam"]["ranges"]
        return conf

    def env(self, command: str, pod: str = "", container: str = "") -> dict[str, str]:
        env = {"PATH": RUNTIME_PATH, "CNI_COMMAND": command, "CNI_PATH": CNI_PATH,
               "CNI_IFNAME": "eth0", "CNILAB_RUN_DIR": str(self.tmp / "run")}
        if pod:
            env["CNI_NETNS"] = f"/run/netns/{pod}"
        if container:
            env["CNI_CONTAINERID"] = container
        return env

    def call(self, binary: str, command: str, conf: dict[str, Any], pod: str,
             ) -> tuple[float, subprocess.CompletedProcess[bytes]]:
        data = json.dumps(conf).encode()
        start = time.perf_counter()
        done = subprocess.run([binary], input=data, capture_output=True,
                              env=self.env(command, pod, f"c-{pod}"), timeout=120)
        elapsed = (time.perf_counter() - start) * 1000
        if done.returncode != 0:
            raise RuntimeError(f"{binary} {command} {pod} failed: {done.stdout!r} "
                               f"{done.stderr[-500:]!r}")
        return elapsed, done

    def lifecycle(self, binary: str, conf: dict[str, Any], pods: list[str], workers: int,
                  ) -> dict[str, list[float]]:
        """ADD all pods, then CHECK all, then DEL all, `workers` calls at a time."""
        times: dict[str, list[float]] = {}
        results: dict[str, Any] = {}

        def add(pod: str) -> float:
            ms, done = self.call(binary, "ADD", conf, pod)
            results[pod] = json.loads(done.stdout)
            return ms

        def check(pod: str) -> float:
            return self.call(binary, "CHECK", {**conf, "prevResult": results[pod]}, pod)[0]

        def delete(pod: str) -> float:
            return self.call(binary, "DEL", conf, pod)[0]

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for command, fn in (("ADD", add), ("CHECK", check), ("DEL", delete)):
                cpu = self.cpu_spent()
                times[command] = list(pool.map(fn, pods))
                times[f"{command} CPU"] = [(self.cpu_spent() - cpu) * 1000 / len(pods)]
        return times

    def cpu_spent(self) -> float:
        """Seconds of CPU used by the plugin processes this bench started (and their IPAM
        children), plus cnilab's resident helper and its workers: a call's whole cost."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return children.ru_utime + children.ru_stime + self._helper_cpu()

    def _helper_cpu(self) -> float:
        pids = [p.read_text().strip() for p in (self.tmp / "run").glob("resident-*.pid")]
        if not pids:
            return 0.0
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            # fields[0] is the state (field 3); ppid is field 4, utime..cstime fields 14-17
            if stat.parent.name in pids or fields[1] in pids:
                total += sum(int(f) for f in fields[11:15])
        return total / os.sysconf("SC_CLK_TCK")

    def run(self) -> dict[str, dict[str, dict[str, list[float]]]]:
        plugins = {"ptp": (PTP, self.conf("ptp", "10.252.0.0/16")),
                   "cnilab": (str(self.plugin), self.conf("cnilab", "10.253.0.0/16"))}
        warm = self.pod_ns[0]
        for binary, conf in plugins.values():  # page cache, and cnilab's resident helper
            self.call(binary, "ADD", conf, warm)
            self.call(binary, "DEL", conf, warm)
        if self.mode == "resident":
            self._wait_for_resident(plugins["cnilab"])
        pods = self.pod_ns[1:]
        out: dict[str, dict[str, dict[str, list[float]]]] = {}
        for label, workers in (("serial", 1), (f"{PARALLEL} parallel", PARALLEL)):
            out[label] = {}
            # Alternate who goes first so neither always runs on a cooler machine.
            order = ["ptp", "cnilab"] if workers == 1 else ["cnilab", "ptp"]
            for name in order:
                binary, conf = plugins[name]
                out[label][name] = self.lifecycle(binary, conf, pods, workers)
        return out

    def _wait_for_resident(self, plugin: tuple[str, dict[str, Any]]) -> None:
        run = self.tmp / "run"
        deadline = time.monotonic() + 30
        while not any(run.glob("resident-*.pid")):  # written once it takes calls
            if time.monotonic() > deadline:
                raise RuntimeError("cnilab's resident helper did not start within 30 s")
            time.sleep(0.1)
        binary, conf = plugin
        self.call(binary, "ADD", conf, self.pod_ns[0])  # one served by the helper
        self.call(binary, "DEL", conf, self.pod_ns[0])


def report(results: dict[str, dict[str, dict[str, list[float]]]], pods: int, mode: str,
           backend: str = "none") -> str:
    lines = [f"cnilab ({mode}, backend {backend}) vs reference ptp, {pods} pods, host-local IPAM, "
             f"{time.strftime('%Y-%m-%d')} on {platform.node()} "
             f"({os.cpu_count()} CPUs, {platform.release()}, python {platform.python_version()})",
             "CPU: per call, the plugin process and its IPAM child (cnilab: with the resident "
             "helper and its workers)",
             "",
             f"{'mode':<12} {'command':<6} {'ptp p50':>8} {'ptp p95':>8} {'cnilab p50':>11} "
             f"{'cnilab p95':>11} {'ratio p50':>10} {'ptp CPU':>8} {'cnilab CPU':>11}"]
    for label, by_plugin in results.items():
        for command in ("ADD", "CHECK", "DEL"):
            ptp, ours = by_plugin["ptp"][command], by_plugin["cnilab"][command]
            p50, o50 = percentile(ptp, 0.5), percentile(ours, 0.5)
            cpu = [by_plugin[name].get(f"{command} CPU", [float("nan")])[0]
                   for name in ("ptp", "cnilab")]
            lines.append(f"{label:<12} {command:<6} {p50:>6.1f}ms {percentile(ptp, .95):>6.1f}ms "
                         f"{o50:>9.1f}ms {percentile(ours, .95):>9.1f}ms {o50 / p50:>9.2f}x "
                         f"{cpu[0]:>6.1f}ms {cpu[1]:>9.1f}ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench plugin",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--plugin", type=Path, default=REPO / "dist" / "cnilab")
    parser.add_argument("--mode", choices=("resident", "in-process"), default="resident",
                        help="in-process: every cnilab call imports pyroute2 itself")
    parser.add_argument("--backend", choices=("none", "host-gw", "vxlan"), default="none",
                        help=f"cnilab also programs {PEERS} peer nodes on every ADD (ptp: none)")
    parser.add_argument("--json", type=Path, help="also write the raw timings here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench plugin needs root (network namespaces)", file=sys.stderr)
        return 2
    if not args.plugin.exists():
        print(f"{args.plugin} does not exist: python -m plugin.build", file=sys.stderr)
        return 2
    if not os.path.exists(PTP):
        print(f"{PTP} missing: apt-get install containernetworking-plugins", file=sys.stderr)
        return 2
    bench = Bench(args.pods, args.plugin.resolve(), args.mode, args.backend)
    try:
        bench.setup()
        results = bench.run()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"bench failed: {e}", file=sys.stderr)
        return 1
    finally:
        bench.teardown()
    print(report(results, args.pods, args.mode, args.backend))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0
