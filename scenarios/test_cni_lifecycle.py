"""What the runtime asks of the plugin besides ADD: CHECK, DEL, GC, and addresses over time."""
from __future__ import annotations

import pytest

from lab.runtime.cni_runtime import version_tuple

from .support import address, delete_pods, make_pods


def _address_with_prefix(pod, family):
    ip = address(pod, family)
    out = pod.exec(["ip", "-o", f"-{family}", "addr", "show", "dev", pod.ifname]).stdout
    return next(w for w in out.split() if w.startswith(ip + "/"))


def test_check_passes_on_a_healthy_pod(cluster, pod_factory, nodes):
    pod = pod_factory(nodes[0], "healthy")
    res = cluster.cni_check(pod)
    assert res.ok, f"CHECK failed on a pod nobody touched:\n{res.stderr}"


def test_check_fails_clearly_after_the_pods_address_is_removed(cluster, pod_factory, nodes,
                                                               family):
    pod = pod_factory(nodes[0], "noaddr")
    ip = address(pod, family)
    assert pod.exec(["ip", "addr", "del", _address_with_prefix(pod, family), "dev",
                     pod.ifname]).ok
    res = cluster.cni_check(pod)
    assert not res.ok, f"CHECK passed although the pod lost its address {ip}"
    message = (res.stdout + res.stderr).lower()
    assert ip in message or "addr" in message, f"CHECK's message does not say why:\n{message}"


def _prefix_length(dst):
    if dst == "default":
        return 0
    return int(dst.split("/")[1]) if "/" in dst else (128 if ":" in dst else 32)


def _routes_via_gateway(pod, family):
    """The pod's routes over the interface under test that go through a gateway, broadest
    first: the ones a plugin's result lists (the default route as the only network, the pod
    CIDR as a secondary one) come before the subnet route a ptp-style plugin adds beside them,
    which no result lists and no CHECK looks at."""
    out = pod.exec(["ip", "-o", f"-{family}", "route", "show", "dev", pod.ifname])
    assert out.ok, f"cannot list {pod.ifname}'s routes in {pod.name}: {out.stderr}"
    routes = [line.split() for line in out.stdout.splitlines() if " via " in line]
    return sorted(routes, key=lambda route: _prefix_length(route[0]))


def test_check_fails_clearly_after_a_route_the_plugin_set_is_removed(cluster, pod_factory,
                                                                      nodes, family):
    pod = pod_factory(nodes[0], "noroute")
    routes = _routes_via_gateway(pod, family)
    if not routes:
        pytest.skip(f"the plugin set no IPv{family} route via a gateway on {pod.ifname}: "
                    "nothing to take")
    gone = routes[0]
    assert pod.exec(["ip", f"-{family}", "route", "del", *gone[:3], "dev", pod.ifname]).ok
    res = cluster.cni_check(pod)
    assert not res.ok, f"CHECK passed although the pod lost its route {' '.join(gone[:3])}"
    assert "route" in (res.stdout + res.stderr).lower(), f"CHECK's message:\n{res.stderr}"


def _reads_leases(cluster) -> bool:
    """Leases are read from host-local's files; other IPAMs keep theirs elsewhere."""
    return cluster.ipam_type == "host-local"


def _require_leases(cluster) -> None:
    if not _reads_leases(cluster):
        pytest.skip(f"not applicable: lease checks read host-local's lease files, this "
                    f"network's IPAM is {cluster.ipam_type or '(none)'}")


def test_delete_removes_interface_host_veth_and_lease_and_twice_is_fine(cluster, nodes):
    node = nodes[0].name
    leases = _reads_leases(cluster)
    veths_before = set(cluster.host_interfaces(node))
    pod = cluster.create_pod("deleted", node)
    try:
        made = set(cluster.host_interfaces(node)) - veths_before
        assert not leases or pod.ip in cluster.ipam_leases(node), f"no lease for {pod.ip} on {node}"
    finally:
        cluster.delete_pod(pod)
    assert not leases or pod.ip not in cluster.ipam_leases(node), \
        f"lease for {pod.ip} survived DEL"
    left = made & set(cluster.host_interfaces(node))
    assert not left, f"host interfaces survived DEL: {sorted(left)}"
    host = next(n for n in cluster.nodes() if n.name == node)
    for ip in (getattr(pod, "ips", None) or {4: pod.ip}).values():
        exact = f"{ip}/128" if ":" in ip else f"{ip}/32"
        route = host.run(["ip", "-o", "route", "show", "to", "exact", exact])
        assert route.ok and not route.stdout.strip(), f"a route to {ip} survived DEL: " \
            f"{route.stdout.strip()}"
    assert pod.name not in {p.name for p in cluster.pods()}, "the pod is still listed"
    cluster.delete_pod(pod)  # DEL for something already gone must succeed


def test_gc_removes_a_leaked_attachment_and_keeps_live_ones(cluster, pod_factory, nodes):
    if version_tuple(cluster.cni_version) < (1, 1, 0):
        pytest.skip(f"not applicable: GC exists from CNI 1.1.0, the network config says "
                    f"cniVersion {cluster.cni_version or '(none)'}")
    _require_leases(cluster)   # the leaked lease is what GC is judged by
    node = nodes[0].name
    live = pod_factory(node, "live")
    before = set(cluster.host_interfaces(node))
    stray = cluster.add_stray_attachment(node)
    try:
        leases = cluster.ipam_leases(node)
        leaked_ips = [ip for ip, owner in leases.items() if owner == stray.container_id]
        leaked_links = set(cluster.host_interfaces(node)) - before
        assert leaked_ips, "the leaked attachment holds no lease: nothing to judge GC by"
        res = cluster.cni_gc(node)
        assert res.ok, f"GC failed on {node}:\n{res.stderr}"
        after = cluster.ipam_leases(node)
        kept = [ip for ip in leaked_ips if ip in after]
        assert not kept, f"GC left the leaked lease(s) {kept} on {node}. {res.stderr}".strip()
        left = leaked_links & set(cluster.host_interfaces(node))
        assert not left, f"GC left the leaked host interface(s) {sorted(left)} on {node}"
        assert after.get(live.ip) == live.attachment.container_id, "GC took a live pod's lease"
        assert cluster.cni_check(live).ok, "the live pod no longer passes CHECK after GC"
    finally:
        cluster.delete_stray_attachment(stray)


def test_ips_come_back_after_churn_and_live_ones_are_never_handed_out(cluster, pod_factory,
                                                                       nodes):
    node = nodes[0].name
    leases = _reads_leases(cluster)
    live = pod_factory(node, "steady")
    baseline = set(cluster.ipam_leases(node))
    seen: list[str] = []
    for _round in range(3):
        # three at once, as a runtime starting a deployment would (and three times faster)
        batch = make_pods(cluster, [(f"churn-{_round}-{i}", node) for i in range(3)])
        try:
            ips = [p.ip for p in batch]
            assert live.ip not in ips, f"{live.ip} of a live pod was handed out again"
            assert len(set(ips)) == len(ips), f"two live pods share an IP: {ips}"
            seen += ips
        finally:
            delete_pods(cluster, batch)
        assert not leases or set(cluster.ipam_leases(node)) == baseline, "churn leaked leases"
    again = pod_factory(node, "after-churn")  # the pool still serves after the churn
    assert again.ip != live.ip, f"{live.ip} of a live pod was handed out again"
    assert not leases or cluster.ipam_leases(node).get(again.ip) == \
        again.attachment.container_id
