"""Plugin speed: ADD/CHECK/DEL of dist/cnilab against the reference ptp, in the same run.

Each stack (`--stacks v4,dual,v6`: an IPv4 range, an IPv4 and an IPv6 range set, an IPv6 one)
is measured for both plugins, a plugin's stacks taking turns in slices of the pods, and
cnilab's dual-stack calls are also set against its own IPv4 calls (the reference ptp waits
~1.5 s for IPv6 DAD on every ADD).

For N pods, serial and then 4 at a time, each plugin gets the same work in namespaces this
bench makes (cnp2- prefix) and removes: a "node" namespace the bench process itself enters,
so every plugin starts exactly as a runtime on that node would start it (fork + exec with a
runtime's minimal PATH, no `ip netns exec` in the timing), and one namespace per pod.
Both use host-local with their own dataDir. cnilab's resident helper gets a private run
directory and is started (by a warm-up call) before timing and stopped at the end. CPU per
call counts the plugin process and its IPAM child, and for cnilab also the helper, its
workers and its ticker.

    python -m bench plugin [--pods 30] [--plugin dist/cnilab] [--mode resident|in-process]
                           [--backend none|host-gw|vxlan] [--stacks v4,dual]
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
BLOCKS = 3  # each stack is measured in this many slices of the pods, the stacks taking turns
NODE_IP = "10.255.0.1"
NODE_IP6 = "fd00:255::1"
PEERS = 5
STACKS = ("v4", "dual", "v6")
# (IPv4 subnet, IPv6 subnet) of each plugin's pods: both plugins' pods share the node
SUBNETS = {"ptp": ("10.252.0.0/16", "fd00:252::/64"),
           "cnilab": ("10.253.0.0/16", "fd00:253::/64")}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Bench:
    def __init__(self, pods: int, plugin: Path, mode: str, backend: str = "none",
                 stacks: tuple[str, ...] = ("v4",)) -> None:
        self.backend = backend
        self.stacks = stacks
        self.suffix = secrets.token_hex(3)
        self.pods = pods
        self.plugin = plugin
        self.mode = mode
        self.tmp = Path(tempfile.mkdtemp(prefix="cnp2-bench-"))
        self._seen: dict[str, int] = {}   # CPU ticks of each resident-side process seen
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
                         ["addr", "add", f"{NODE_IP6}/64", "dev", "cnp2up0", "nodad"],
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
    def conf(self, kind: str, stack: str) -> dict[str, Any]:
        v4, v6 = SUBNETS[kind]
        subnets = {"v4": [v4], "dual": [v4, v6], "v6": [v6]}[stack]
        defaults = [{"dst": "0.0.0.0/0"}] * (stack != "v6") + [{"dst": "::/0"}] * (stack != "v4")
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0", "name": f"cnp2bench{kind}{stack}", "type": kind,
            "ipam": {"type": "host-local", "dataDir": str(self.tmp / f"ipam-{kind}-{stack}"),
                     "ranges": [[{"subnet": s}] for s in subnets], "routes": defaults},
        }
        if kind == "cnilab" and self.mode != "resident":
            conf["resident"] = False
        if kind == "cnilab" and self.backend != "none":
            # One cluster-wide config: this node plus PEERS others; IPAM gets our podSubnets.
            def entry(name: str, ips: list[str], pods: list[str]) -> dict[str, Any]:
                return {"name": name, "ip": ips[0], "podSubnet": pods[0], "ips": ips,
                        "podSubnets": pods}

            families = {"v4": (4,), "dual": (4, 6), "v6": (6,)}[stack]
            peer_ips = {4: "10.255.0.{}", 6: "fd00:255::{}"}
            peer_pods = {4: "10.200.{}.0/24", 6: "fd00:200:0:{}::/64"}
            conf.update(backend=self.backend, nodeName="bench", nodes=[
                entry("bench", [NODE_IP, NODE_IP6] if stack == "dual" else
                      [NODE_IP if stack == "v4" else NODE_IP6], subnets),
                *(entry(f"peer{i}", [peer_ips[f].format(i + 10) for f in families],
                        [peer_pods[f].format(i) for f in families]) for i in range(PEERS))],
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
        """The helper, its workers (and their IPAM children) and its ticker (and the sleeps
        it waits for): what the resident side costs the node."""
        pids = [p.read_text().strip() for p in (self.tmp / "run").glob("resident-*.pid")]
        if not pids:
            return 0.0
        tickers = {f"CNILAB_TICK_FOR={pid}".encode() for pid in pids}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                ticker = bool(tickers & set(
                    (stat.parent / "environ").read_bytes().split(b"\0")))
            except OSError:  # gone meanwhile
                continue
            # fields[0] is the state (field 3); ppid is field 4, utime..cstime fields 14-17.
            # The helper counts its own time only: the workers it reaped would land in its
            # cutime twice. A worker's and ticker's count their reaped IPAM children too, and
            # stay counted (last seen) after the pool lets them go, so the sum never shrinks.
            if stat.parent.name in pids:
                self._seen[stat.parent.name] = sum(int(f) for f in fields[11:13])
            elif fields[1] in pids or ticker:
                self._seen[stat.parent.name] = sum(int(f) for f in fields[11:15])
        return sum(self._seen.values()) / os.sysconf("SC_CLK_TCK")

    def run(self) -> dict[str, dict[str, dict[str, list[float]]]]:
        """{"serial" | "4 parallel": {"<plugin> <stack>": {command: times}}}"""
        binaries = {"ptp": PTP, "cnilab": str(self.plugin)}
        plugins = {f"{kind} {stack}": (binaries[kind], self.conf(kind, stack))
                   for stack in self.stacks for kind in ("ptp", "cnilab")}
        warm = self.pod_ns[0]
        for binary, conf in plugins.values():  # page cache, and cnilab's resident helper
            self.call(binary, "ADD", conf, warm)
            self.call(binary, "DEL", conf, warm)
        if self.mode == "resident":
            self._wait_for_resident(plugins[f"cnilab {self.stacks[0]}"])
        pods = self.pod_ns[1:]
        out: dict[str, dict[str, dict[str, list[float]]]] = {}
        for label, workers in (("serial", 1), (f"{PARALLEL} parallel", PARALLEL)):
            out[label] = {}
            # Who goes first alternates between rounds so that neither plugin always runs on
            # a cooler machine; cnilab's helper gets a burst of `workers` calls first, so that
            # no stack pays for forking its workers (idle ones stop after 10 s).
            for kind in ("ptp", "cnilab") if workers == 1 else ("cnilab", "ptp"):
                if kind == "cnilab" and self.mode == "resident":
                    binary, conf = plugins[f"cnilab {self.stacks[0]}"]
                    self.lifecycle(binary, conf, pods[:workers], workers)
                out[label].update(self._stacks_interleaved(kind, plugins, pods, workers))
        return out

    def _stacks_interleaved(self, kind: str, plugins: dict[str, tuple[str, dict[str, Any]]],
                            pods: list[str], workers: int) -> dict[str, dict[str, list[float]]]:
        """One plugin's stacks in BLOCKS slices of the pods, in turn and each time the other
        way round: a burst of load on a shared machine falls on every stack alike (whole
        stacks one after the other measured a dual-stack/IPv4 ratio anywhere in 0.8-2.0x)."""
        found: dict[str, dict[str, list[float]]] = {
            f"{kind} {s}": {c: [] for c in ("ADD", "CHECK", "DEL")} for s in self.stacks}
        spent: dict[str, dict[str, float]] = {name: {} for name in found}
        for block in range(BLOCKS):
            share = pods[block::BLOCKS]
            for stack in self.stacks if block % 2 == 0 else self.stacks[::-1]:
                name = f"{kind} {stack}"
                binary, conf = plugins[name]
                times = self.lifecycle(binary, conf, share, workers)
                for command in ("ADD", "CHECK", "DEL"):
                    found[name][command] += times[command]
                    cpu = times[f"{command} CPU"][0] * len(share)
                    spent[name][command] = spent[name].get(command, 0.0) + cpu
        for name, by_command in spent.items():
            for command, total in by_command.items():
                found[name][f"{command} CPU"] = [total / len(found[name][command])]
        return found

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
    stacks = list(dict.fromkeys(name.split()[1] for by in results.values() for name in by))
    lines = [f"cnilab ({mode}, backend {backend}) vs reference ptp, {pods} pods, host-local IPAM, "
             f"{time.strftime('%Y-%m-%d')} on {platform.node()} "
             f"({os.cpu_count()} CPUs, {platform.release()}, python {platform.python_version()})",
             "CPU: per call, the plugin process and its IPAM child (cnilab: with the resident "
             "helper and its workers)",
             "",
             f"{'mode':<12} {'stack':<5} {'command':<6} {'ptp p50':>8} {'ptp p95':>8} "
             f"{'cnilab p50':>11} {'cnilab p95':>11} {'ratio p50':>10} {'ptp CPU':>8} "
             f"{'cnilab CPU':>11}"]
    for label, by_plugin in results.items():
        for stack in stacks:
            for command in ("ADD", "CHECK", "DEL"):
                ptp, ours = by_plugin[f"ptp {stack}"], by_plugin[f"cnilab {stack}"]
                p50, o50 = percentile(ptp[command], 0.5), percentile(ours[command], 0.5)
                cpu = [p.get(f"{command} CPU", [float("nan")])[0] for p in (ptp, ours)]
                lines.append(
                    f"{label:<12} {stack:<5} {command:<6} {p50:>6.1f}ms "
                    f"{percentile(ptp[command], .95):>6.1f}ms {o50:>9.1f}ms "
                    f"{percentile(ours[command], .95):>9.1f}ms {o50 / p50:>9.2f}x "
                    f"{cpu[0]:>6.1f}ms {cpu[1]:>9.1f}ms")
    if "v4" in stacks and len(stacks) > 1:
        lines += ["", "cnilab against its own IPv4 calls (p50 ratio; CPU per call):"]
        for label, by_plugin in results.items():
            base = by_plugin["cnilab v4"]
            for stack in (s for s in stacks if s != "v4"):
                ours = by_plugin[f"cnilab {stack}"]
                for command in ("ADD", "CHECK", "DEL"):
                    ratio = percentile(ours[command], .5) / percentile(base[command], .5)
                    spent = ours.get(f"{command} CPU", [float("nan")])[0]
                    lines.append(f"{label:<12} {stack:<5} {command:<6} {ratio:>5.2f}x of v4 "
                                 f"({percentile(ours[command], .5):.1f} vs "
                                 f"{percentile(base[command], .5):.1f} ms; CPU {spent:.1f} ms)")
    return "\n".join(lines)


def _stacks(text: str) -> tuple[str, ...]:
    stacks = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in stacks if s not in STACKS]
    if unknown or not stacks:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or text!r}: stacks are "
                                         f"{', '.join(STACKS)}")
    return stacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench plugin",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--plugin", type=Path, default=REPO / "dist" / "cnilab")
    parser.add_argument("--mode", choices=("resident", "in-process"), default="resident",
                        help="in-process: every cnilab call imports pyroute2 itself")
    parser.add_argument("--backend", choices=("none", "host-gw", "vxlan"), default="none",
                        help=f"cnilab also programs {PEERS} peer nodes on every ADD (ptp: none)")
    parser.add_argument("--stacks", default="v4", type=_stacks,
                        help="comma-separated, of v4, dual, v6 (default: v4)")
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
    bench = Bench(args.pods, args.plugin.resolve(), args.mode, args.backend, args.stacks)
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
