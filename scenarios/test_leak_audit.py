"""After every other scenario (this module runs last): nothing the suite made is left: no host
interface, lease, pod namespace, or host route to a pod address (v4 or v6)."""
from __future__ import annotations

import pytest

from .support import snapshot


def test_no_stray_pod_host_interface_lease_or_namespace(cluster, leak_baseline):
    now = snapshot(cluster)
    leftovers = []
    for node, before in leak_baseline.items():
        after = now[node]
        for what, extra in (("host interfaces", after.host_interfaces - before.host_interfaces),
                            ("IPAM leases", after.leases - before.leases),
                            ("network namespaces", after.namespaces - before.namespaces),
                            ("host routes to pods", after.pod_routes - before.pod_routes)):
            if extra:
                leftovers.append(f"{node}: {what} {sorted(extra)}")
    assert not leftovers, "the suite leaked:\n" + "\n".join(leftovers)


def test_every_add_result_of_the_suite_was_true(cluster):
    """Each pod any scenario made had its ADD result judged as test_add_results judges one."""
    if cluster.findings:
        pytest.fail("ADD results that were wrong:\n" + "\n".join(
            f"  pod {pod} (made by {test}):\n    " + "\n    ".join(found)
            for test, pod, found in cluster.findings[:10]), pytrace=False)
