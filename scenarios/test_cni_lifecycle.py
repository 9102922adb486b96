"""What the runtime asks of the plugin besides ADD: CHECK, DEL, GC, and addresses over time."""
from __future__ import annotations


def _address_with_prefix(pod):
    out = pod.exec(["ip", "-o", "-4", "addr", "show", "dev", pod.ifname]).stdout
    return next(w for w in out.split() if w.startswith(pod.ip + "/"))


def test_check_passes_on_a_healthy_pod(cluster, pod_factory, nodes):
    pod = pod_factory(nodes[0], "healthy")
    res = cluster.cni_check(pod)
    assert res.ok, f"CHECK failed on a pod nobody touched:\n{res.stderr}"


def test_check_fails_clearly_after_the_pods_address_is_removed(cluster, pod_factory, nodes):
    pod = pod_factory(nodes[0], "noaddr")
    assert pod.exec(["ip", "addr", "del", _address_with_prefix(pod), "dev", pod.ifname]).ok
    res = cluster.cni_check(pod)
    assert not res.ok, "CHECK passed although the pod lost its address"
    message = (res.stdout + res.stderr).lower()
    assert pod.ip in message or "addr" in message, f"CHECK's message does not say why:\n{message}"


def test_check_fails_clearly_after_the_pods_default_route_is_removed(cluster, pod_factory,
                                                                     nodes):
    pod = pod_factory(nodes[0], "noroute")
    assert pod.exec(["ip", "route", "del", "default"]).ok
    res = cluster.cni_check(pod)
    assert not res.ok, "CHECK passed although the pod lost its default route"
    assert "route" in (res.stdout + res.stderr).lower(), f"CHECK's message:\n{res.stderr}"


def test_delete_removes_interface_host_veth_and_lease_and_twice_is_fine(cluster, nodes):
    node = nodes[0].name
    veths_before = set(cluster.host_interfaces(node))
    pod = cluster.create_pod("deleted", node)
    try:
        made = set(cluster.host_interfaces(node)) - veths_before
        assert pod.ip in cluster.ipam_leases(node), f"no lease for {pod.ip} on {node}"
    finally:
        cluster.delete_pod(pod)
    assert pod.ip not in cluster.ipam_leases(node), f"lease for {pod.ip} survived DEL"
    left = made & set(cluster.host_interfaces(node))
    assert not left, f"host interfaces survived DEL: {sorted(left)}"
    assert pod.name not in {p.name for p in cluster.pods()}, "the pod is still listed"
    cluster.delete_pod(pod)  # DEL for something already gone must succeed


def test_gc_removes_a_leaked_attachment_and_keeps_live_ones(cluster, pod_factory, nodes):
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
    live = pod_factory(node, "steady")
    baseline = set(cluster.ipam_leases(node))
    seen: list[str] = []
    for _round in range(3):
        batch = [cluster.create_pod(f"churn-{_round}-{i}", node) for i in range(3)]
        try:
            ips = [p.ip for p in batch]
            assert live.ip not in ips, f"{live.ip} of a live pod was handed out again"
            assert len(set(ips)) == len(ips), f"two live pods share an IP: {ips}"
            seen += ips
        finally:
            for pod in batch:
                cluster.delete_pod(pod)
        assert set(cluster.ipam_leases(node)) == baseline, "churn leaked leases"
    again = pod_factory(node, "after-churn")  # the pool still serves after the churn
    assert again.ip != live.ip, f"{live.ip} of a live pod was handed out again"
    assert cluster.ipam_leases(node).get(again.ip) == again.attachment.container_id
