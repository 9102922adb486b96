"""16 ADDs at once, as a runtime starting a burst of pods would: distinct IPs, all wired."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from cnitest import host_local_conf, leases, links, ns_run, run_plugin

pytestmark = [pytest.mark.root, pytest.mark.slow]
PODS = 16


def test_parallel_adds_get_distinct_ips_and_parallel_dels_clean_up(node_ns, make_netns,
                                                                   ipam_dir):
    conf = host_local_conf(ipam_dir, "10.250.30.0/24")
    pods = [make_netns("pod") for _ in range(PODS)]
    with ThreadPoolExecutor(PODS) as pool:
        adds = list(pool.map(lambda i: run_plugin(node_ns, "ADD", conf, netns=pods[i],
                                                  container_id=f"par{i}"), range(PODS)))
    assert all(a.returncode == 0 for a in adds), [str(a) for a in adds if a.returncode]
    ips = [a.json["ips"][0]["address"].split("/")[0] for a in adds]
    assert len(set(ips)) == PODS
    assert sorted(leases(ipam_dir, "cnp1net")) == sorted(ips)
    assert len(links(node_ns)) == PODS + 1
    ping = ns_run(pods[0], "ping", "-c1", "-W2", ips[-1])
    assert ping.returncode == 0, ping.stdout

    with ThreadPoolExecutor(PODS) as pool:
        dels = list(pool.map(lambda i: run_plugin(node_ns, "DEL", conf, netns=pods[i],
                                                  container_id=f"par{i}"), range(PODS)))
    assert all(d.returncode == 0 for d in dels), [str(d) for d in dels if d.returncode]
    assert links(node_ns) == ["lo"] and leases(ipam_dir, "cnp1net") == []
