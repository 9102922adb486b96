"""Helpers for plugin tests, importable as `from cnitest import ...` (unique module name:
pytest imports every conftest.py as "conftest", so tests cannot import from it reliably).

Everything a test makes lives in namespaces it created (deleting a namespace deletes its veths
and routes) or under pytest's tmp_path (IPAM leases), so nothing outlives a test.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")
CNI_PATH = "/usr/lib/cni"
NETNS_DIR = "/run/netns"
PLUGIN_ARGV: tuple[str, ...] = (PYTHON, "-m", "plugin")
BARE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # what a runtime hands a plugin, roughly


def ns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def ns_run(ns: str, *argv: str, check: bool = False,
           input: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          check=check, input=input, timeout=60)


# What a new namespace starts with in these tests, whatever the host has: a new netns copies
# the host's IPv4 settings (net.core.devconf_inherit_init_net = 0), so a host that forwards
# (libvirt, docker, Kubernetes) would otherwise hand every test forwarding already on.
BASELINE_SYSCTLS = ("net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0",
                    "net.ipv6.conf.default.forwarding=0")


def create_ns(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                   capture_output=True)
    subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", *BASELINE_SYSCTLS],
                   check=True, capture_output=True)


def delete_ns(name: str) -> None:
    if ns_exists(name):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def unique_ns_name(prefix: str, role: str) -> str:
    return f"{prefix}{role}-{secrets.token_hex(3)}"[:60]


def links(ns: str) -> list[str]:
    """Interface names in namespace `ns`."""
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show"], capture_output=True,
                         text=True, check=True).stdout
    return sorted(item["ifname"] for item in json.loads(out or "[]"))


def routes(ns: str, family: int = 4) -> list[str]:
    """Main-table routes of `ns` of `family` (4 or 6) as `ip route` prints them."""
    out = subprocess.run(["ip", "-n", ns, f"-{family}", "route", "show"], capture_output=True,
                         text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def addresses(ns: str, dev: str, family: int = 6) -> dict[str, dict[str, Any]]:
    """"address/prefixlen" -> `ip -j addr` entry of each `family` address on `dev` in `ns`."""
    out = subprocess.run(["ip", "-n", ns, "-j", f"-{family}", "addr", "show", "dev", dev],
                         capture_output=True, text=True, check=True).stdout
    return {f"{a['local']}/{a['prefixlen']}": a
            for link in json.loads(out or "[]") for a in link.get("addr_info", [])}


@dataclass
class PluginRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    def __str__(self) -> str:
        return f"exit {self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def run_plugin(node: str, command: str, conf: Optional[Mapping[str, Any]] = None, *,
               container_id: str = "ctr1", netns: Optional[str] = None, ifname: str = "eth0",
               args: str = "", path: str = CNI_PATH, extra_env: Optional[Mapping[str, str]] = None,
               stdin: Optional[bytes] = None, drop_env: Sequence[str] = (),
               plugin_argv: Sequence[str] = PLUGIN_ARGV, timeout: float = 60,
               cwd: Optional[Path] = None) -> PluginRun:
    """Runs the plugin inside namespace `node` as a runtime would; `netns` is a namespace name
    (turned into /run/netns/<name>), a path, or "" for an empty CNI_NETNS."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
           "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname, "CNI_ARGS": args,
           "CNI_PATH": path}
    if netns is not None:
        env["CNI_NETNS"] = netns if (netns == "" or "/" in netns) else f"{NETNS_DIR}/{netns}"
    env.update(extra_env or {})
    for name in drop_env:
        env.pop(name, None)
    data = stdin if stdin is not None else json.dumps(conf or {}).encode()
    p = subprocess.run(["ip", "netns", "exec", node, *plugin_argv], input=data,
                       capture_output=True, env=env, cwd=str(cwd or REPO), timeout=timeout)
    return PluginRun(p.returncode, p.stdout.decode(errors="replace"),
                     p.stderr.decode(errors="replace"))


def host_local_conf(data_dir: Path, subnet: str = "10.250.0.0/24", *, version: str = "1.1.0",
                    name: str = "cnp1net", **extra: Any) -> dict[str, Any]:
    """A cnilab network config (backend none) with host-local IPAM keeping leases in data_dir.

    `subnet` may name several, comma-separated ("10.250.1.0/24,fd00:250:1::/64"): a range
    set and a default route for each (a dual-stack network).
    """
    subnets = subnet.split(",")
    defaults = {4: "0.0.0.0/0", 6: "::/0"}
    conf: dict[str, Any] = {
        "cniVersion": version, "name": name, "type": "cnilab",
        "ipam": {"type": "host-local", "dataDir": str(data_dir),
                 "ranges": [[{"subnet": s}] for s in subnets],
                 "routes": [{"dst": defaults[6 if ":" in s else 4]} for s in subnets]},
    }
    conf.update(extra)
    return conf


def leases(data_dir: Path, network: str) -> list[str]:
    """IPs host-local has handed out on `network` (its lease files, not its bookkeeping)."""
    d = data_dir / network
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir()
                  if not p.name.startswith("last_reserved_ip") and p.name != "lock")


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> bool:
    """Polls `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def stop_helper(plugin: Path, run_dir: Path) -> None:
    """Stops the resident helper of `plugin` in `run_dir` (and waits for it)."""
    subprocess.run([str(plugin), "--resident-stop"], capture_output=True, timeout=60,
                   env={"PATH": BARE_PATH, "CNILAB_RUN_DIR": str(run_dir)})


def children_of(pid: int) -> list[int]:
    """Live (not zombie) children of `pid`."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(stat_file.parent.name))
    return found
