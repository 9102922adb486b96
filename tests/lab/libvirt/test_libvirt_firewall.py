"""What `lab down` removes from and `lab up` restores to the host firewall (plans only: the
real chains are checked by the vm test)."""
from __future__ import annotations

from lab.nodes.providers.libvirt import firewall

LEFT_BY_LIBVIRT = [
    "-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT",
    "-N LIBVIRT_FWI", "-N LIBVIRT_FWO", "-N LIBVIRT_FWX", "-N LIBVIRT_INP", "-N LIBVIRT_OUT",
    "-A INPUT -j LIBVIRT_INP", "-A FORWARD -j LIBVIRT_FWX", "-A FORWARD -j LIBVIRT_FWI",
    "-A FORWARD -j LIBVIRT_FWO", "-A OUTPUT -j LIBVIRT_OUT",
    "-A FORWARD -i eth0 -j ACCEPT",
]


def test_empty_libvirt_chains_and_their_jumps_are_removed():
    plan = firewall.cleanup_plan(LEFT_BY_LIBVIRT)
    assert ["-D", "INPUT", "-j", "LIBVIRT_INP"] in plan
    assert ["-D", "FORWARD", "-j", "LIBVIRT_FWX"] in plan
    assert plan[-5:] == [["-X", c] for c in ("LIBVIRT_FWI", "LIBVIRT_FWO", "LIBVIRT_FWX",
                                               "LIBVIRT_INP", "LIBVIRT_OUT")]
    assert not any("eth0" in arg for args in plan for arg in args)   # not ours: untouched
    # jumps go before the chains: a chain that is still referenced cannot be deleted
    assert max(i for i, a in enumerate(plan) if a[0] == "-D") < plan.index(["-X", "LIBVIRT_FWI"])


def test_chains_still_in_use_are_kept():
    in_use = [*LEFT_BY_LIBVIRT, "-A LIBVIRT_FWO -s 10.0.0.0/24 -i virbr0 -j ACCEPT"]
    assert firewall.cleanup_plan(in_use) == []
    assert firewall.cleanup_plan(["-P INPUT ACCEPT"]) == []


def test_missing_chains_are_laid_out_like_libvirt():
    plan = firewall.ensure_plan({"filter": [], "nat": [], "mangle": []})
    filter_jumps = [a for t, a in plan if t == "filter" and a[0] == "-I"]
    # each inserted at the top: FWO, FWI, FWX inserted in turn leave FWX first, as libvirt does
    assert [a[4] for a in filter_jumps if a[1] == "FORWARD"] == [
        "LIBVIRT_FWO", "LIBVIRT_FWI", "LIBVIRT_FWX"]
    assert ("nat", ["-N", "LIBVIRT_PRT"]) in plan
    assert ("mangle", ["-I", "POSTROUTING", "1", "-j", "LIBVIRT_PRT"]) in plan


def test_nothing_to_add_when_everything_is_there():
    nat = ["-N LIBVIRT_PRT", "-A POSTROUTING -j LIBVIRT_PRT"]
    assert firewall.ensure_plan({"filter": LEFT_BY_LIBVIRT, "nat": nat, "mangle": nat}) == []
