"""What ADD returns is judged against the spec and against the pod (judge.py, spec.py): the
result has the shape of the config's cniVersion, says that version, points only at interfaces
it lists, names the pod's netns as the sandbox, and claims nothing the pod does not have."""
from __future__ import annotations

import pytest

from .judge import judge_add


def test_add_result_has_the_configs_shape_and_claims_only_what_the_pod_has(cluster, nodes,
                                                                          pod_factory):
    pod = pod_factory(nodes[0], "judged")
    found = judge_add(cluster.add_result(pod), cluster.cni_version, pod, nodes[0])
    if found:
        pytest.fail(f"the ADD result of pod {pod.name} on {pod.node} (cniVersion "
                    f"{cluster.cni_version} config) is wrong:\n  " + "\n  ".join(found),
                    pytrace=False)
