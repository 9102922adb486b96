"""After every other scenario (this module runs last): nothing the suite made is left."""
from __future__ import annotations

from conftest import snapshot


def test_no_stray_pod_host_interface_lease_or_namespace(cluster, node_host, leak_baseline):
    now = snapshot(cluster, node_host)
    leftovers = []
    for node, before in leak_baseline.items():
        after = now[node]
        for what, extra in (("host interfaces", after.host_interfaces - before.host_interfaces),
                            ("IPAM leases", after.leases - before.leases),
                            ("network namespaces", after.namespaces - before.namespaces)):
            if extra:
                leftovers.append(f"{node}: {what} {sorted(extra)}")
    assert not leftovers, "the suite leaked:\n" + "\n".join(leftovers)
