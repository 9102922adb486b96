"""What the spec and runtimes demand beyond a pod's ordinary life: ADD into an interface that
exists, DEL with the netns empty or gone, CHECK of a container nobody added, every version the
plugin's VERSION claims, and many ADDs at once. The calls a pod's life never makes go straight
to the node's runtime (netns and VM labs; on Kubernetes the kubelet owns the runtime)."""
from __future__ import annotations

import contextlib
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from lab.api import LabError
from lab.runtime.cni_runtime import CniCallError, check_refused, plugin_configs

from .hostside import host_side
from .spec import self_findings, shape_findings
from .support import delete_pods, expect, family_of, make_pods, require_check


def _runtime(cluster, node):
    if not hasattr(cluster, "runtime"):
        pytest.skip("not applicable: these calls go to the node's runtime directly, which "
                    "netns and VM labs emulate; on Kubernetes the kubelet owns it")
    return cluster.runtime(node.name)


def _leases_of(cluster, node, container_id):
    if cluster.ipam_type != "host-local":
        return []
    return [ip for ip, owner in cluster.ipam_leases(node.name).items() if owner == container_id]


def test_add_on_an_existing_ifname_fails_with_a_cni_error_and_leaks_nothing(cluster, nodes,
                                                                             pod_factory):
    node = nodes[0]
    runtime = _runtime(cluster, node)
    pod = pod_factory(node, "taken")
    before = host_side(cluster, node)
    intruder = f"{cluster.name}-dup-{secrets.token_hex(4)}"
    try:
        runtime.add(intruder, pod.attachment.netns, pod.ifname)
        error = None
    except CniCallError as e:
        error = e
    finally:
        runtime.forget(intruder)
    leftover = sorted(host_side(cluster, node) - before)
    leases = _leases_of(cluster, node, intruder)
    expect(error is not None, f"ADD into pod {pod.name}, whose {pod.ifname} exists, succeeded: "
                              "the spec says ADD must fail when CNI_IFNAME exists")
    expect(error.code is not None, "ADD into an existing interface failed without a CNI "
                                   f"error (no error JSON on stdout): {error.msg}")
    expect(not leases, f"the failed ADD kept the lease(s) {leases} on {node.name}: an ADD that "
                       "fails after IPAM must release it")
    expect(not leftover, f"the failed ADD left on {node.name}:\n  " + "\n  ".join(leftover))
    if not check_refused(cluster.cni_version):
        check = cluster.cni_check(pod)
        expect(check.ok, f"pod {pod.name} no longer passes CHECK after the failed ADD:\n"
                         f"{check.stderr}")


def test_del_with_an_empty_or_vanished_netns_succeeds_and_frees_the_lease(cluster, nodes):
    node = nodes[0]
    runtime = _runtime(cluster, node)
    gone, empty = make_pods(cluster, [("netns-gone", node.name), ("netns-empty", node.name)])
    try:
        cluster.remove_namespace(node.name, gone.attachment.netns)
        for pod, netns, how in ((gone, gone.attachment.netns, "a vanished"),
                                (empty, "", "an empty")):
            refused = ""
            try:
                runtime.delete(pod.attachment.container_id, pod.ifname, netns=netns)
            except CniCallError as e:
                refused = f"{e.msg} (code {e.code})"
            expect(not refused, f"DEL with {how} CNI_NETNS ({netns!r}) failed: {refused}; "
                                "DEL must succeed when things are gone")
            leases = _leases_of(cluster, node, pod.attachment.container_id)
            expect(not leases, f"DEL with {how} CNI_NETNS kept the lease(s) {leases}")
    finally:
        with contextlib.suppress(LabError):   # a DEL that fails has said so above
            delete_pods(cluster, [gone, empty])


def test_check_of_a_container_never_added_fails(cluster, nodes, pod_factory):
    require_check(cluster)
    node = nodes[0]
    runtime = _runtime(cluster, node)
    pod = pod_factory(node, "known")
    conf = {**plugin_configs(runtime.config)[0], "prevResult": cluster.add_result(pod)}
    netns = cluster.bare_namespace(node.name)
    try:
        never = f"{cluster.name}-never-{secrets.token_hex(3)}"
        argv, stdin = runtime.invocation("CHECK", conf, never, netns, pod.ifname, "")
        res = node.run(argv, input=stdin, timeout=60)
    finally:
        cluster.remove_namespace(node.name, netns)
    expect(not res.ok, "CHECK of a container never added (an empty netns, another pod's "
                       "result as prevResult) passed: CHECK must verify what ADD made")


def _serves(cluster, node, runtime, version):
    """ADD, CHECK and DEL at one cniVersion in a namespace of its own: what went wrong."""
    # The plugin under test alone: plugins chained after it claim versions of their own.
    config = {**plugin_configs(runtime.config)[0], "cniVersion": version}
    spec = replace(cluster.spec, configs={**cluster.spec.configs, node.name: config})
    rt = type(runtime)(node, spec)
    container = f"{cluster.name}-v{version.replace('.', '')}-{secrets.token_hex(3)}"
    netns = cluster.bare_namespace(node.name)
    found: list[str] = []
    try:
        result = rt.add(container, netns)
        found += shape_findings(result, version) + self_findings(result, version)
        if not check_refused(version):
            rt.check(container)
        rt.delete(container)
        found += [f"DEL kept the lease {ip}" for ip in _leases_of(cluster, node, container)]
    except CniCallError as e:
        found.append(f"{e.command} failed: {e.msg} (code {e.code})")
        with contextlib.suppress(CniCallError):
            rt.delete(container)
    finally:
        cluster.remove_namespace(node.name, netns)
    return [f"{version}: {f}" for f in found]


def test_every_version_the_plugin_claims_serves_add_check_and_del(cluster, nodes):
    node = nodes[0]
    runtime = _runtime(cluster, node)
    versions = runtime.version().get("supportedVersions") or []
    expect(isinstance(versions, list) and versions,
           f"VERSION lists no supportedVersions: {json.dumps(runtime.version())}")
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = [f for fs in pool.map(lambda v: _serves(cluster, node, runtime, str(v)),
                                      versions) for f in fs]
    expect(not found, f"VERSION claims {', '.join(map(str, versions))}; not all are served:\n  "
                      + "\n  ".join(found))


def test_eight_adds_at_once_on_one_node_give_eight_distinct_working_pods(cluster, nodes, probe):
    node = nodes[0]
    pods = make_pods(cluster, [(f"burst-{i}", node.name) for i in range(8)])
    try:
        ips = [p.ip for p in pods]
        expect(len(set(ips)) == 8, f"8 ADDs at once on {node.name} gave {len(set(ips))} "
                                   f"distinct IPs: {sorted(ips)}")
        with ThreadPoolExecutor(max_workers=8) as pool:
            failed = [why for why in pool.map(
                lambda p: probe.node_to_pod(cluster, node, p, family_of(p.ip)), pods) if why]
        expect(not failed, f"of 8 pods added at once, {node.name} cannot reach "
                           f"{len(failed)}:\n" + "\n".join(failed))
        wrong = [f"{pod}: {'; '.join(found)}" for _, pod, found in cluster.findings
                 if pod in {p.name for p in pods}]
        expect(not wrong, "ADD results of pods added at once are wrong:\n  " + "\n  ".join(wrong))
    finally:
        delete_pods(cluster, pods)
