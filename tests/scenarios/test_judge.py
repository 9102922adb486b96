"""The judge's parts on their own, no lab: result shapes per version, claims against a pod's
view, host-side items, the leak ledger's blame, and the runtime's word on a non-JSON line."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lab.api import Attachment
from lab.runtime.cni_runtime import not_json
from scenarios.hostside import Ledger, _item
from scenarios.judge import Links, PodView, claim_findings
from scenarios.spec import self_findings, shape_findings

NETNS = "/run/netns/cnilab-t-pod-a"


def ptp_result(version: str = "1.0.0") -> dict:
    ip = {"interface": 1, "address": "10.244.0.5/24", "gateway": "10.244.0.1"}
    if version < "1.0.0":
        ip["version"] = "4"
    return {"cniVersion": version,
            "interfaces": [{"name": "veth1", "mac": "aa:aa:aa:aa:aa:01"},
                           {"name": "eth0", "mac": "aa:aa:aa:aa:aa:02", "sandbox": NETNS}],
            "ips": [ip], "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}], "dns": {}}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_a_well_formed_result_of_each_version_has_its_shape(version):
    assert shape_findings(ptp_result(version), version) == []
    assert self_findings(ptp_result(version), version) == []


def test_legacy_results_have_ip4():
    legacy = {"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1",
                                             "routes": [{"dst": "0.0.0.0/0"}]}}
    assert shape_findings(legacy, "0.2.0") == []
    assert shape_findings(ptp_result(), "0.2.0")   # interfaces/ips do not exist in 0.2.0


def test_each_field_that_breaks_the_shape_is_named():
    bad = ptp_result("1.0.0")
    bad["ips"][0].update(version="4", interface="1", address="10.244.0.5")
    bad["interfaces"][1]["mtu"] = 1500
    found = "\n".join(shape_findings(bad, "1.0.0"))
    assert "ips[0].version: not a field of a 1.0.0 result" in found
    assert "interfaces[1].mtu: not a field of a 1.0.0 result" in found
    assert "ips[0].address: must be an address with its prefix length" in found
    assert "ips[0].interface" in found
    assert "ips[0].version: required in a 0.4.0 result" in shape_findings(ptp_result(), "0.4.0")[0]


def test_self_findings_catch_version_index_and_family():
    bad = ptp_result()
    bad["cniVersion"] = "0.4.0"
    bad["ips"][0]["interface"] = 5
    bad["routes"].append({"dst": "::/0", "gw": "10.244.0.1"})
    found = self_findings(bad, "1.0.0")
    assert found[0] == "cniVersion: the config asks for 1.0.0, the result says '0.4.0'"
    assert "ips[0].interface: 5 points past interfaces (it has 2)" in found
    assert any("routes[1]" in f and "other family" in f for f in found)


def _view(**changes) -> PodView:
    links = Links(macs={"lo": "00:00:00:00:00:00", "eth0": "aa:aa:aa:aa:aa:02"},
                  flags={"lo": ["UP"], "eth0": ["BROADCAST", "UP", "LOWER_UP"]},
                  addresses={"lo": {"127.0.0.1/8"}, "eth0": {"10.244.0.5/24"}})
    routes = {4: [{"dst": "default", "gateway": "10.244.0.1", "dev": "eth0"},
                  {"dst": "10.244.0.1", "dev": "eth0", "scope": "link"}], 6: []}
    view = PodView(links, routes)
    for key, value in changes.items():
        setattr(view, key, value)
    return view


def _claims(result, view=None, node_macs=None):
    node = Links(macs=node_macs if node_macs is not None else {"veth1": "aa:aa:aa:aa:aa:01"})
    return claim_findings(result, view or _view(), node, pod="a", node="node1", netns=NETNS,
                          ifname="eth0")


def test_a_true_result_claims_nothing_the_pod_lacks():
    assert _claims(ptp_result()) == []


def test_claims_the_pod_lacks_are_named_with_what_it_has():
    result = ptp_result()
    result["interfaces"][1]["mac"] = "02:00:00:00:00:01"
    result["interfaces"][1]["sandbox"] = "/run/netns/other"
    result["ips"][0]["address"] = "10.244.0.250/24"
    result["routes"].append({"dst": "10.96.0.0/12", "gw": "10.244.0.1"})
    found = "\n".join(_claims(result))
    assert "mac says 02:00:00:00:00:01, pod a's eth0 has aa:aa:aa:aa:aa:02" in found
    assert f"sandbox says /run/netns/other, the pod's netns is {NETNS}" in found
    assert "claims 10.244.0.250/24 on eth0, pod a's eth0 has 10.244.0.5/24" in found
    assert "routes[1]: claims 10.96.0.0/12 via 10.244.0.1, pod a has no such route" in found


def test_a_missing_route_a_down_interface_and_a_host_veth_that_is_gone():
    view = _view(routes={4: [], 6: []})
    view.links.flags["eth0"] = ["BROADCAST"]
    found = "\n".join(_claims(ptp_result(), view, node_macs={"eth1": "aa:aa:aa:aa:aa:09"}))
    assert "routes[0]: claims 0.0.0.0/0 via 10.244.0.1, pod a has no such route (its IPv4 " \
           "routes: none)" in found
    assert "interfaces[1] (eth0): down in pod a" in found
    assert "interfaces[0] (veth1): a host-side interface node1 does not have" in found


def test_host_side_items_leave_out_what_traffic_and_addresses_make():
    assert _item("route", "10.244.0.5 dev veth1 scope link") == \
        "route 10.244.0.5 dev veth1 scope link"
    assert _item("route", "10.99.0.0/24 dev eth0 proto kernel scope link src 10.99.0.11") == ""
    assert _item("route", "default via 10.0.0.1 dev eth0 proto static metric 100") == \
        "route default via 10.0.0.1 dev eth0"
    assert _item("rule", "0:\tfrom all lookup local") == ""
    assert _item("rule", "32765:\tfrom 10.244.0.5 lookup 100") == \
        "rule from 10.244.0.5 lookup 100"
    assert _item("address", "2: eth0    inet6 fe80::1/64 scope link") == ""


@dataclass
class FakePod:
    name: str
    ip: str
    node: str = "node1"
    ifname: str = "eth0"
    ips: dict = field(default_factory=dict)

    @property
    def attachment(self):
        return Attachment(f"cid-{self.name}", "eth0", self.node)


def test_the_ledger_blames_the_pod_an_item_names_once_no_live_pod_may_own_it():
    ledger = Ledger()
    a, b = FakePod("a", "10.244.0.5"), FakePod("b", "10.244.0.6")
    shared = {"link lkb1", "rule from 10.244.0.5 lookup 100", "link veth-b"}
    ledger.born(a, "test_one", set(shared))   # added at once: both footprints hold everything
    ledger.born(b, "test_one", set(shared))
    ledger.died(a, frozenset(shared))         # b is live: nothing is judged yet
    assert ledger.take() == []
    ledger.died(b, frozenset({"link lkb1", "rule from 10.244.0.5 lookup 100"}))
    leaks = {leak.item: leak.pods for leak in ledger.take()}
    assert leaks == {"rule from 10.244.0.5 lookup 100": ["pod a (made by test_one)"],
                     "link lkb1": ["pod a (made by test_one)", "pod b (made by test_one)"]}


def test_a_line_before_the_result_is_said_to_be_that():
    said = not_json("ptp", 'ptp: wiring eth0\n{"cniVersion": "1.0.0"}\n')
    assert "1 line(s) that are not JSON before its result, first 'ptp: wiring eth0'" in said
    assert "something that is not JSON: 'oops'" in not_json("ptp", "oops\n")
