"""The suites catch broken plugins: each plugin of tests/scenarios/broken/ is the reference ptp,
our dist/cnilab or the shell example with ONE defect a developer could make. Each is put on a
2-node netns lab of its own and judged by the one scenario meant to catch it (`-k`); that
scenario must fail (or, for a leak found after DEL, error at teardown) with a message naming
the defect. The unbroken plugins pass the same scenarios. Labs run three at a time.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIT = Path(__file__).resolve().parent / "broken"
LAB = [sys.executable, "-c", "from lab.cli import main_entry; main_entry()"]
pytestmark = [pytest.mark.root, pytest.mark.slow]

RESULT = "test_add_result_has_the_configs_shape_and_claims_only_what_the_pod_has"
DEL = "test_delete_while_the_netns_exists_removes_the_host_side_and_twice_is_fine"
HEALTHY = "test_check_passes_on_a_healthy_pod"      # its teardown finds what a pod leaked
EXISTING = "test_add_on_an_existing_ifname_fails_with_a_cni_error_and_leaks_nothing"
NETNS = "test_del_with_an_empty_or_vanished_netns_succeeds_and_frees_the_lease"
UNKNOWN = "test_check_of_a_container_never_added_fails"
VERSIONS = "test_every_version_the_plugin_claims_serves_add_check_and_del"
SAME_ICMP = "test_same_node_pod_to_pod_icmp_both_directions"
NODE_OWN = "test_same_node_node_reaches_its_pods"
MTU = "test_pod_mtu_is_the_configured_one"
CROSS_ICMP = "test_cross_node_pod_to_pod_icmp_both_directions"
UPGRADE_KEEPS = "test_upgrade_same_node_old_pods_keep_traffic"
UPGRADE_CHECK = "test_upgrade_check_by_the_new_build_passes_on_old_pods"
UPGRADE_DEL = "test_upgrade_del_by_the_new_build_removes_what_the_old_build_made"

# broken plugin -> (the scenario meant to catch it, what its message must say)
CAUGHT_BY: dict[str, tuple[str, tuple[str, ...]]] = {
    "ptp-route-claimed-not-installed": (RESULT, ("routes[0]: claims 0.0.0.0/0, pod",
                                                 "has no such route")),
    "ptp-wrong-cniversion": (RESULT, ("cniVersion: the config asks for 1.0.0, the result "
                                      "says '0.4.0'",)),
    "ptp-interface-index-out-of-range": (RESULT, ("ips[0].interface: 5 points past",)),
    "ptp-wrong-mac": (RESULT, ("mac says 02:00:00:00:00:01",)),
    "ptp-wrong-ip": (RESULT, (".250/24 on eth0",)),
    "ptp-wrong-sandbox": (RESULT, ("sandbox says /var/run/netns/elsewhere",)),
    "ptp-version-field-in-1-0-0": (RESULT, ("ips[0].version: not a field of a 1.0.0",)),
    "ptp-address-without-prefix": (RESULT, ("ips[0].address: must be an address with its "
                                            "prefix length",)),
    "ptp-pod-interface-down": (RESULT, ("(eth0): down in pod",)),
    "ptp-non-json-line": (RESULT, ("not JSON before its result, first 'ptp: wiring eth0'",)),
    "ptp-del-leaves-host-veth": (DEL, ("still has what its ADD made", "link veth")),
    "ptp-leaks-link-per-add": (HEALTHY, ("link lkb", "left by pod healthy-")),
    "ptp-leaks-permanent-neighbour": (DEL, ("still has what its ADD made",
                                            "neighbour 10.244.")),
    "ptp-leaks-iptables-rule": (DEL, ("still has rules naming", "MASQUERADE")),
    "ptp-leaks-state-file": (HEALTHY, ("/state/", "left by pod healthy-")),
    "ptp-add-on-existing-ifname-succeeds": (EXISTING, ("succeeded: the spec says ADD must "
                                                       "fail",)),
    "ptp-add-on-existing-ifname-keeps-lease": (EXISTING, ("the failed ADD kept the lease",)),
    "ptp-del-fails-netns-gone": (NETNS, ("DEL with a vanished CNI_NETNS",)),
    "ptp-del-fails-empty-netns": (NETNS, ("DEL with an empty CNI_NETNS",)),
    "ptp-check-accepts-unknown-container": (UNKNOWN, ("CHECK of a container never added",)),
    "ptp-claims-unserved-version": (VERSIONS, ("1.1.0: ADD failed",)),
    "ptp-forwarding-off": (SAME_ICMP, ("diagnosis: node1 has forwarding off",)),
    "ptp-mtu-wrong": (MTU, ("MTU 1400, config asks for 1500",)),
    "ptp-host-veth-down": (NODE_OWN, ("diagnosis: node", "which is down")),
    "cnilab-no-peer-routes": (CROSS_ICMP, ("diagnosis: node1 has no route to",)),
    "cnilab-no-sandbox": (RESULT, ("no entry for CNI_IFNAME eth0 with a sandbox",)),
    "cnilab-leaks-rule-per-add": (HEALTHY, ("rule from 10.244.", "left by pod healthy-")),
    "cnilab-wrong-ip": (RESULT, (".250/24 on eth0",)),
    "shell-no-default-route": (SAME_ICMP, ("diagnosis: pod ", "has no route to")),
    "shell-no-host-route": (NODE_OWN, ("diagnosis: node1 has no route to",)),
    "shell-leaks-lease": (DEL, ("still has what its ADD made", "/10.244.0.")),
    "cnilab-upgrade-flushes-pod-routes-on-add": (UPGRADE_KEEPS, (
        "pods the old build made on one node lost traffic",
        "diagnosis: node1 has no route to 10.244.0.")),
    "shell-upgrade-check-refuses-old-results": (UPGRADE_CHECK, (
        "the new build's CHECK failed on pods the old build made",
        "prevResult lists no host-side interface")),
    "shell-upgrade-dels-only-its-own-veth-names": (UPGRADE_DEL, (
        "the new build's DEL of pod old-del-", "what the old build's ADD made", "link mp")),
}
# New builds: the lab starts with the unbroken plugin of their base and the upgrade scenario
# deploys the broken one over it (--lab-upgrade-to).
NEW_BUILDS = {p for p in CAUGHT_BY if "-upgrade-" in p}
UNBROKEN = {"ptp": "/usr/lib/cni/ptp", "cnilab": str(ROOT / "dist" / "cnilab"),
            "shell": str(ROOT / "examples" / "shell-plugin" / "myptp")}
NOISE = ("CommandResult(", "Traceback", "assert False")

_NODES = '[[nodes]]\nname = "node1"\nrole = "server"\n[[nodes]]\nname = "node2"\n'
_NETWORK = '[network]\nunderlay = "10.99.0.0/24"\npod_cidr = "10.244.0.0/16"\n'
_IPAM = ('[plugin.config.ipam]\ntype = "host-local"\n'
         'ranges = [[{ subnet = "${NODE_POD_SUBNET}" }]]\nroutes = [{ dst = "0.0.0.0/0" }]\n')
# base -> the [plugin] section (path filled in) of its lab
PLUGIN = {
    "ptp": ('[plugin]\npath = "{path}"\ntype = "ptp"\n[plugin.config]\ncniVersion = "1.0.0"\n'
            'name = "ptp"\nmtu = 1500\n' + _IPAM),
    "cnilab": ('[plugin]\npath = "{path}"\ntype = "cnilab"\nbackend = "host-gw"\n'
               '[plugin.config]\ncniVersion = "1.1.0"\nname = "cnilab"\nmtu = 1500\n'
               '[plugin.config.ipam]\ntype = "host-local"\nroutes = [{ dst = "0.0.0.0/0" }]\n'),
    "shell": ('[plugin]\npath = "{path}"\ntype = "myptp"\nnode_setup = "'
              + str(ROOT / "examples" / "shell-plugin" / "peers-hostgw.sh") + '"\n'
              '[plugin.config]\ncniVersion = "1.0.0"\nmtu = 1500\n' + _IPAM),
}


@dataclass
class Verdict:
    plugin: str
    outcomes: dict[str, str]      # test name (without [v4]) -> passed/failure/error/skipped
    output: str


def _base(plugin: str) -> str:
    return plugin.split("-", 1)[0]


def _judge(plugin: str, path: str, scenarios: list[str], tmp: Path,
           upgrade_to: str | None = None) -> Verdict:
    """lab up with `path` as the plugin, the scenarios (the upgrade one to `upgrade_to` when
    given), lab down: always, whatever failed."""
    name = f"t4{secrets.token_hex(3)}"
    work = tmp / plugin
    work.mkdir()
    config = work / "lab.toml"
    config.write_text(f'[lab]\nname = "{name}"\n{_NODES}{_NETWORK}'
                      + PLUGIN[_base(plugin)].replace("{path}", path))
    common = ["-c", str(config), "--name", name]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    junit = work / "junit.xml"
    try:
        up = subprocess.run([*LAB, "up", *common], cwd=ROOT, capture_output=True, text=True,
                            timeout=180, env=env)
        if up.returncode != 0:
            return Verdict(plugin, {}, f"lab up failed:\n{up.stderr[-2000:]}")
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "scenarios/",
             "--lab-config", str(config), "--lab-name", name, f"--junitxml={junit}",
             f"--lab-logs-dir={work / 'logs'}", "-q", "-o", "addopts=--strict-markers",
             "-k", " or ".join(scenarios),
             *(["--lab-upgrade-to", upgrade_to] if upgrade_to else [])],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        outcomes: dict[str, str] = {}
        if junit.exists():
            for case in ET.parse(junit).iter("testcase"):
                tags = {child.tag for child in case}
                test = case.get("name", "").split("[")[0]
                outcome = next((t for t in ("failure", "error", "skipped") if t in tags),
                               "passed")
                if outcomes.get(test, "passed") == "passed":  # a teardown error is a 2nd case
                    outcomes[test] = outcome
        return Verdict(plugin, outcomes, suite.stdout + suite.stderr)
    finally:
        subprocess.run([*LAB, "down", *common], cwd=ROOT, capture_output=True, timeout=120,
                       env=env)


def _kit_plugin(plugin: str, tmp: Path) -> str:
    """The broken plugin with the kit's and the repository's paths filled in."""
    made = tmp / f"{plugin}.sh"
    made.write_text((KIT / plugin).read_text().replace("@KIT@", str(KIT))
                    .replace("@REPO@", str(ROOT)))
    made.chmod(0o755)
    return str(made)


def _need_plugin_build() -> None:
    if not (ROOT / "dist" / "cnilab").exists():
        built = subprocess.run([sys.executable, "-m", "plugin.build"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, built.stderr[-2000:]


def test_the_kit_has_a_plugin_for_every_defect_and_covers_every_base():
    files = {p.name for p in KIT.iterdir() if p.name != "lib.sh"}
    assert files == set(CAUGHT_BY), files ^ set(CAUGHT_BY)
    assert len(files) >= 25
    assert {_base(p) for p in files} == set(UNBROKEN)
    for plugin in files:
        head = (KIT / plugin).read_text().splitlines()[:4]
        assert head[0] == "#!/bin/sh" and head[1].startswith("# "), (plugin, head)


def test_each_broken_plugin_is_caught_by_the_scenario_meant_for_it(tmp_path):
    _need_plugin_build()
    def judge(plugin: str) -> Verdict:
        made = _kit_plugin(plugin, tmp_path)
        if plugin in NEW_BUILDS:
            return _judge(plugin, UNBROKEN[_base(plugin)], [CAUGHT_BY[plugin][0]], tmp_path,
                          upgrade_to=made)
        return _judge(plugin, made, [CAUGHT_BY[plugin][0]], tmp_path)

    with ThreadPoolExecutor(max_workers=3) as pool:
        verdicts = list(pool.map(judge, sorted(CAUGHT_BY)))
    missed = []
    for verdict in verdicts:
        scenario, words = CAUGHT_BY[verdict.plugin]
        outcome = verdict.outcomes.get(scenario, "not run")
        said = [w for w in words if w not in verdict.output]
        noise = [n for n in NOISE if n in verdict.output]
        if outcome not in ("failure", "error") or said or noise:
            missed.append(f"{verdict.plugin}: {scenario} {outcome}; message lacks {said}; "
                          f"noise {noise}\n{verdict.output[-1500:]}")
    assert not missed, f"{len(missed)} of {len(verdicts)} broken plugins got through:\n" + \
        "\n\n".join(missed)


def test_the_unbroken_plugins_pass_the_same_scenarios(tmp_path):
    _need_plugin_build()
    scenarios = {base: sorted({s for p, (s, _) in CAUGHT_BY.items() if _base(p) == base})
                 for base in UNBROKEN}
    with ThreadPoolExecutor(max_workers=3) as pool:
        verdicts = list(pool.map(lambda b: _judge(b, UNBROKEN[b], scenarios[b], tmp_path),
                                 sorted(UNBROKEN)))
    for verdict in verdicts:
        wanted = set(scenarios[verdict.plugin])
        ran = {t: o for t, o in verdict.outcomes.items() if t in wanted}
        assert set(ran) == wanted, (verdict.plugin, sorted(ran), verdict.output[-2000:])
        bad = {t: o for t, o in ran.items() if o != "passed"}
        assert not bad, (verdict.plugin, bad, verdict.output[-3000:])
