"""What the runtime asks of the plugin besides ADD: CHECK, DEL, GC, and addresses over time."""
from __future__ import annotations

import pytest

from lab.runtime.cni_runtime import version_tuple

from .hostside import host_side
from .support import (
    address,
    delete_pods,
    expect,
    family_of,
    make_pods,
    require_check,
)


def _address_with_prefix(pod, family):
    ip = address(pod, family)
    out = pod.exec(["ip", "-o", f"-{family}", "addr", "show", "dev", pod.ifname]).stdout
    return next(w for w in out.split() if w.startswith(ip + "/"))


def test_check_passes_on_a_healthy_pod(cluster, pod_factory, nodes):
    require_check(cluster)
    pod = pod_factory(nodes[0], "healthy")
    res = cluster.cni_check(pod)
    expect(res.ok, f"CHECK failed on a pod nobody touched:\n{res.stderr}")


def test_check_fails_clearly_after_the_pods_address_is_removed(cluster, pod_factory, nodes,
                                                               family):
    require_check(cluster)
    pod = pod_factory(nodes[0], "noaddr")
    ip = address(pod, family)
    removed = pod.exec(["ip", "addr", "del", _address_with_prefix(pod, family), "dev",
                        pod.ifname])
    expect(removed.ok, f"could not take {ip} off pod {pod.name}: {removed.stderr.strip()}")
    res = cluster.cni_check(pod)
    expect(not res.ok, f"CHECK passed although the pod lost its address {ip}")
    message = (res.stdout + res.stderr).lower()
    expect(ip in message or "addr" in message, f"CHECK's message does not say why:\n{message}")


def _prefix_length(dst):
    if dst == "default":
        return 0
    return int(dst.split("/")[1]) if "/" in dst else (128 if ":" in dst else 32)


def _result_routes(cluster, pod, family):
    """The routes the pod's ADD result claims in family, broadest first (the default route
    of the only network, the pod CIDR of a secondary one): what CHECK must verify."""
    result = cluster.add_result(pod) or {}
    claimed = [r for r in result.get("routes") or [] if isinstance(r, dict)]
    for key in ("ip4", "ip6"):      # 0.1.0/0.2.0
        claimed += (result.get(key) or {}).get("routes") or []
    mine = [r for r in claimed if family_of(str(r.get("dst", ""))) == family]
    return sorted(mine, key=lambda r: _prefix_length(str(r["dst"])))


def test_check_fails_clearly_after_a_route_the_plugin_set_is_removed(cluster, pod_factory,
                                                                      nodes, family):
    require_check(cluster)
    pod = pod_factory(nodes[0], "noroute")
    routes = _result_routes(cluster, pod, family)
    if not routes:
        pytest.skip(f"not applicable: the ADD result claims no IPv{family} route, so CHECK "
                    "has none to verify")
    dst = str(routes[0]["dst"])
    dst = "default" if _prefix_length(dst) == 0 else dst
    taken = pod.exec(["ip", f"-{family}", "route", "del", dst, "dev", pod.ifname])
    expect(taken.ok, f"the ADD result of pod {pod.name} claims the route {dst}, the pod has "
                     f"none on {pod.ifname} to take away ({taken.stderr.strip()})")
    res = cluster.cni_check(pod)
    expect(not res.ok, f"CHECK passed although the pod lost its route {dst}")
    expect("route" in (res.stdout + res.stderr).lower(), f"CHECK's message:\n{res.stderr}")


def _reads_leases(cluster) -> bool:
    """Leases are read from host-local's files; other IPAMs keep theirs elsewhere."""
    return cluster.ipam_type == "host-local"


def _require_leases(cluster) -> None:
    if not _reads_leases(cluster):
        pytest.skip(f"not applicable: lease checks read host-local's lease files, this "
                    f"network's IPAM is {cluster.ipam_type or '(none)'}")


def _rules_naming(node, ip):
    """iptables/nftables lines that name ip (a pod's NAT or filter rules)."""
    listed = node.run(["sh", "-c", "{ iptables-save; ip6tables-save; nft list ruleset; } "
                                   "2>/dev/null"], timeout=20).stdout
    return [line.strip() for line in listed.splitlines()
            if f"{ip}/" in line or f"{ip} " in line or line.endswith(ip)]


def test_delete_while_the_netns_exists_removes_the_host_side_and_twice_is_fine(cluster, nodes):
    """DEL judged on its own: the pod's namespace is still there (deleting it would take the
    host veth with it), so whatever the host side still has after DEL, DEL left."""
    node = nodes[0]
    before = host_side(cluster, node)
    pod = cluster.create_pod("deleted", node.name)
    try:
        made = host_side(cluster, node) - before
        leased = _reads_leases(cluster) and pod.ip in cluster.ipam_leases(node.name)
        expect(not _reads_leases(cluster) or leased, f"no lease for {pod.ip} on {node.name}")
        res = cluster.cni_call(pod, "DEL")
        expect(res.ok, f"DEL of pod {pod.name} (its netns still there) failed:\n{res.stderr}")
        left = sorted(made & host_side(cluster, node))
        ips = set((getattr(pod, "ips", None) or {4: pod.ip}).values())
        rules = [r for ip in ips for r in _rules_naming(node, ip)]
        inside = pod.exec(["ip", "link", "show", "dev", pod.ifname])
    finally:
        cluster.delete_pod(pod)
    expect(not left, f"after DEL, with pod {pod.name}'s netns still there, {node.name} "
                     "still has what its ADD made:\n  " + "\n  ".join(left))
    expect(not rules, f"after DEL, {node.name} still has rules naming {sorted(ips)}:\n  "
                      + "\n  ".join(rules))
    expect(not inside.ok, f"after DEL, pod {pod.name} still has its {pod.ifname}")
    expect(not _reads_leases(cluster) or pod.ip not in cluster.ipam_leases(node.name),
           f"the lease for {pod.ip} survived DEL")
    expect(pod.name not in {p.name for p in cluster.pods()}, "the pod is still listed")
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
        expect(res.ok, f"GC failed on {node}:\n{res.stderr}")
        after = cluster.ipam_leases(node)
        kept = [ip for ip in leaked_ips if ip in after]
        assert not kept, f"GC left the leaked lease(s) {kept} on {node}. {res.stderr}".strip()
        left = leaked_links & set(cluster.host_interfaces(node))
        assert not left, f"GC left the leaked host interface(s) {sorted(left)} on {node}"
        assert after.get(live.ip) == live.attachment.container_id, "GC took a live pod's lease"
        expect(cluster.cni_check(live).ok, "the live pod no longer passes CHECK after GC")
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
