"""Undoing what libvirt leaves on the host after its last NAT network is gone.

libvirt (iptables backend) adds LIBVIRT_* chains and jumps to them from the built-in chains
when a NAT network starts, removes its rules when the network stops, but keeps the chains and
jumps, and it turns net.ipv4.ip_forward on. Once no libvirt network runs any more, the empty
chains are removed, and ip_forward is restored if the lab recorded that it was off.

libvirtd makes its chains only once per daemon run: after they were removed, the next network
would fail ("No chain/target/match"). So before starting a network the provider puts back any
that are missing, the way libvirt lays them out (`ensure_libvirt_chains`).
"""
from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

TABLES = ("filter", "nat", "mangle")
TOOLS = ("iptables", "ip6tables")
CHAIN_PREFIX = "LIBVIRT_"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _rules(tool: str, table: str) -> list[str]:
    try:
        proc = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def cleanup_plan(rules: list[str]) -> list[list[str]]:
    """The iptables arguments that remove the LIBVIRT_* chains of one table listing (`-S`),
    or nothing when any of them still holds a rule (some network still uses them). Pure."""
    chains = [m.group(1) for r in rules if (m := re.match(r"-N (LIBVIRT_\S+)$", r))]
    if not chains:
        return []
    if any(r.startswith(f"-A {c} ") for r in rules for c in chains):
        return []
    plan: list[list[str]] = []
    for rule in rules:
        m = re.match(r"-A (\S+) (.*)-j (LIBVIRT_\S+)$", rule)
        if m and m.group(3) in chains:
            plan.append(["-D", m.group(1), *m.group(2).split(), "-j", m.group(3)])
    plan += [["-X", c] for c in chains]
    return plan


# (table, built-in chain, libvirt chain) in libvirt's order: each jump is inserted at the top,
# so FORWARD ends up FWX, FWI, FWO as libvirt leaves it.
LIBVIRT_CHAINS = (
    ("filter", "INPUT", "LIBVIRT_INP"),
    ("filter", "OUTPUT", "LIBVIRT_OUT"),
    ("filter", "FORWARD", "LIBVIRT_FWO"),
    ("filter", "FORWARD", "LIBVIRT_FWI"),
    ("filter", "FORWARD", "LIBVIRT_FWX"),
    ("nat", "POSTROUTING", "LIBVIRT_PRT"),
    ("mangle", "POSTROUTING", "LIBVIRT_PRT"),
)


def ensure_plan(rules_by_table: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """(table, iptables args) that add the missing libvirt chains and jumps. Pure."""
    plan: list[tuple[str, list[str]]] = []
    for table, parent, chain in LIBVIRT_CHAINS:
        rules = rules_by_table.get(table, [])
        if f"-N {chain}" not in rules and (table, ["-N", chain]) not in plan:
            plan.append((table, ["-N", chain]))
        if f"-A {parent} -j {chain}" not in rules:
            plan.append((table, ["-I", parent, "1", "-j", chain]))
    return plan


def ensure_libvirt_chains() -> None:
    for tool in TOOLS:
        rules = {table: _rules(tool, table) for table in TABLES}
        if not any(rules.values()):
            continue       # this tool is missing or not usable here
        for table, args in ensure_plan(rules):
            subprocess.run([tool, "-w", "-t", table, *args], capture_output=True, timeout=30,
                           check=False)


def remove_libvirt_chains() -> list[str]:
    """Removes the empty LIBVIRT_* chains and their jumps; returns what was removed."""
    removed: list[str] = []
    for tool in TOOLS:
        for table in TABLES:
            for args in cleanup_plan(_rules(tool, table)):
                proc = subprocess.run([tool, "-w", "-t", table, *args], capture_output=True,
                                      text=True, timeout=30, check=False)
                if proc.returncode == 0:
                    removed.append(f"{tool} -t {table} {' '.join(args)}")
    return removed


def libvirt_chains() -> list[str]:
    """Every LIBVIRT_* chain on the host, as "tool/table/chain" (for leak checks)."""
    return [f"{tool}/{table}/{r[3:]}" for tool in TOOLS for table in TABLES
            for r in _rules(tool, table) if r.startswith(f"-N {CHAIN_PREFIX}")]


def read_ip_forward() -> str:
    try:
        return IP_FORWARD.read_text().strip()
    except OSError:
        return ""


def restore_ip_forward(value: str) -> None:
    # Not root, or a read-only /proc: nothing to restore then.
    if value in ("0", "1"):
        with contextlib.suppress(OSError):
            IP_FORWARD.write_text(value + "\n")
