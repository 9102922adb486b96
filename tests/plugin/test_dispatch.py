"""The dispatcher in-process: every path that needs no namespace (no root, no netlink)."""
from __future__ import annotations

import json

import pytest

from plugin.cni import commands, result, wiring
from plugin.cni.log import CallLog
from plugin.cni.skel import Outcome, dispatch
from plugin.cni.undo import UndoStack

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def conf(version: str = "1.1.0", **extra) -> bytes:
    doc = {"cniVersion": version, "name": "net1", "type": "cnilab",
           "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/24"}]]}}
    doc.update(extra)
    return json.dumps(doc).encode()


def env(command: str, **extra: str) -> dict[str, str]:
    base = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    base.update(extra)
    return base


def error_of(outcome: Outcome) -> dict:
    assert outcome.exit_code == 1, outcome
    body = json.loads(outcome.stdout)
    assert set(body) == {"cniVersion", "code", "msg", "details"}
    assert "Traceback" not in outcome.stdout + outcome.stderr
    return body


def test_version_needs_no_environment_or_config():
    out = dispatch({"CNI_COMMAND": "VERSION"}, b"")
    assert out.exit_code == 0 and out.stderr == ""
    assert json.loads(out.stdout) == {"cniVersion": "1.1.0", "supportedVersions": VERSIONS}


def test_version_does_not_import_pyroute2():
    import subprocess
    import sys

    code = ("import sys; from plugin.cni.skel import dispatch; "
            "dispatch({'CNI_COMMAND': 'VERSION'}, b''); "
            "dispatch({'CNI_COMMAND': 'ADD'}, b'{}'); "
            "print(any(m.startswith('pyroute2') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("command_env,needle", [
    ({}, "CNI_COMMAND"),
    ({"CNI_COMMAND": "FROB"}, "CNI_COMMAND"),
    ({"CNI_COMMAND": "add"}, "CNI_COMMAND"),
])
def test_missing_or_unknown_command_is_code_4(command_env, needle):
    body = error_of(dispatch(command_env, conf()))
    assert body["code"] == 4 and needle in body["msg"]


@pytest.mark.parametrize("command,missing", [
    ("ADD", "CNI_CONTAINERID"), ("ADD", "CNI_NETNS"), ("ADD", "CNI_IFNAME"),
    ("ADD", "CNI_PATH"), ("CHECK", "CNI_NETNS"), ("DEL", "CNI_CONTAINERID"),
    ("DEL", "CNI_IFNAME"), ("GC", "CNI_PATH"),
])
def test_missing_variable_is_named(command, missing):
    e = env(command)
    del e[missing]
    body = error_of(dispatch(e, conf()))
    assert body["code"] == 4 and missing in body["msg"]


@pytest.mark.parametrize("name,value", [
    ("CNI_IFNAME", "averyveryverylongname"), ("CNI_IFNAME", "eth/0"), ("CNI_IFNAME", "a b"),
    ("CNI_CONTAINERID", "-bad"), ("CNI_CONTAINERID", "has/slash"), ("CNI_ARGS", "novalue"),
])
def test_invalid_variable_is_named(name, value):
    body = error_of(dispatch(env("ADD", **{name: value}), conf()))
    assert body["code"] == 4 and name in body["msg"]


@pytest.mark.parametrize("stdin", [b"", b"{not json", b"\xff\xfe", b"[1, 2]", b"null"])
def test_undecodable_stdin_is_code_6(stdin):
    assert error_of(dispatch(env("ADD"), stdin))["code"] == 6


@pytest.mark.parametrize("version", ["0.2.0", "2.0.0", "banana", "1.0"])
def test_unsupported_version_is_code_1(version):
    body = error_of(dispatch(env("ADD"), conf(version)))
    assert body["code"] == 1 and version in body["details"]


@pytest.mark.parametrize("command", ["GC", "STATUS"])
@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_gc_and_status_need_1_1_0(command, version):
    body = error_of(dispatch(env(command), conf(version)))
    assert body["code"] == 1 and body["cniVersion"] == version


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d.pop("name"), "name"),
    (lambda d: d.pop("type"), "type"),
    (lambda d: d.pop("cniVersion"), "cniVersion"),
    (lambda d: d.pop("ipam"), "ipam"),
    (lambda d: d.update(name="bad/name"), "name"),
    (lambda d: d.update(mtu="big"), "mtu"),
    (lambda d: d.update(backend="ipsec"), "backend"),
    (lambda d: d.update(ipam={"type": "no-such-ipam"}), "ipam.type"),
    (lambda d: d.update(ipam={"type": "../../bin/sh"}), "ipam.type"),
])
def test_invalid_config_is_code_7_naming_the_field(mutate, field):
    doc = json.loads(conf())
    mutate(doc)
    body = error_of(dispatch(env("ADD"), json.dumps(doc).encode()))
    assert body["code"] == 7 and field in body["msg"], body


def test_check_without_prev_result_is_code_7():
    body = error_of(dispatch(env("CHECK"), conf()))
    assert body["code"] == 7 and "prevResult" in body["msg"]


def test_gc_without_attachment_list_is_code_7():
    body = error_of(dispatch(env("GC"), conf()))
    assert body["code"] == 7 and "valid-attachments" in body["msg"]


def test_status_without_ipam_plugin_is_code_50(tmp_path):
    body = error_of(dispatch(env("STATUS", CNI_PATH=str(tmp_path)), conf()))
    assert body["code"] == 50 and "host-local" in body["msg"]


def test_unexpected_exception_becomes_999_with_its_text(monkeypatch):
    def boom(*_a):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(commands, "cmd_add", boom)
    body = error_of(dispatch(env("ADD"), conf()))
    assert body["code"] == 999 and "kaboom" in body["details"]


def test_os_error_becomes_code_5(monkeypatch):
    def io(*_a):
        raise PermissionError(13, "Permission denied", "/run/x")

    monkeypatch.setattr(commands, "cmd_del", io)
    body = error_of(dispatch(env("DEL"), conf()))
    assert body["code"] == 5 and "Permission denied" in body["msg"]


def test_errors_answer_in_the_config_version():
    body = error_of(dispatch(env("ADD", CNI_IFNAME="x/y"), conf("0.4.0")))
    assert body["cniVersion"] == "0.4.0"


def test_log_file_receives_the_log_instead_of_stderr(tmp_path, monkeypatch):
    log = tmp_path / "cnilab.log"

    def fail(*_a):
        raise commands.CniError(100, "no addresses")

    monkeypatch.setattr(commands, "cmd_add", fail)
    out = dispatch(env("ADD"), conf(logFile=str(log)))
    assert out.stderr == "" and "no addresses" in log.read_text()


# --- results --------------------------------------------------------------------------------

OURS = {"interfaces": [{"name": "cnlx", "mac": "aa:bb:cc:dd:ee:01", "mtu": 1400},
                       {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1400,
                        "sandbox": "/run/netns/p"}],
        "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "table": 7}], "dns": {"nameservers": ["10.1.0.10"]}}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_pre_1_0_results_carry_ip_version(version):
    out = result.render(result.normalize(OURS), version)
    assert out["cniVersion"] == version
    assert out["ips"][0]["version"] == "4"
    assert "mtu" not in out["interfaces"][0] and "table" not in out["routes"][0]


def test_1_0_results_drop_version_and_1_1_fields():
    out = result.render(result.normalize(OURS), "1.0.0")
    assert "version" not in out["ips"][0]
    assert "mtu" not in out["interfaces"][1] and "table" not in out["routes"][0]


def test_1_1_results_keep_mtu_and_route_table():
    out = result.render(result.normalize(OURS), "1.1.0")
    assert out["interfaces"][1]["mtu"] == 1400 and out["routes"][0]["table"] == 7


def test_normalize_reads_old_results():
    old = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.0.5/24"}]}
    assert result.normalize(old)["ips"] == [{"address": "10.1.0.5/24"}]


def test_merge_appends_our_interfaces_and_shifts_ip_indexes():
    prev = {"interfaces": [{"name": "eth0", "sandbox": "/run/netns/p"}],
            "ips": [{"address": "10.9.0.2/24", "interface": 0}],
            "routes": [{"dst": "10.9.0.0/16"}]}
    merged = result.merge(result.normalize(prev), result.normalize(OURS))
    assert [i["name"] for i in merged["interfaces"]] == ["eth0", "cnlx", "eth0"]
    assert [ip["interface"] for ip in merged["ips"]] == [0, 2]
    assert len(merged["routes"]) == 2


@pytest.mark.parametrize("bad", [
    {"ips": [{"address": "not-an-ip"}]},
    {"ips": [{"address": "10.0.0.1/24", "interface": 3}]},
    {"routes": [{"gw": "10.0.0.1"}]},
    [],
])
def test_bad_results_are_decode_failures(bad):
    with pytest.raises(commands.CniError) as e:
        result.normalize(bad)
    assert e.value.code == 6


# --- small pieces ---------------------------------------------------------------------------

def test_host_veth_names_are_deterministic_and_fit_the_kernel():
    a = wiring.host_veth_name("net1", "c1", "eth0")
    assert a == wiring.host_veth_name("net1", "c1", "eth0")
    assert len(a) <= 15
    assert a != wiring.host_veth_name("net1", "c1", "net1")
    assert a != wiring.host_veth_name("net2", "c1", "eth0")


def test_alias_round_trip():
    alias = wiring.attachment_alias("net1", "c1", "eth0")
    assert wiring.parse_alias(alias) == ("net1", "c1", "eth0")
    assert wiring.parse_alias("something else") is None
    assert wiring.parse_alias("cnilab/net1/c1") is None


def test_undo_stack_runs_newest_first_and_survives_a_failing_undo():
    done: list[str] = []
    log = CallLog()

    def broken():
        raise OSError("stuck")

    with pytest.raises(ValueError), UndoStack(log) as undo:
        undo.push("a", lambda: done.append("a"))
        undo.push("b", broken)
        undo.push("c", lambda: done.append("c"))
        raise ValueError("step failed")
    assert done == ["c", "a"]
    assert any("undo failed: b" in line for line in log.lines)


def test_committed_undo_stack_undoes_nothing():
    done: list[str] = []
    with UndoStack(CallLog()) as undo:
        undo.push("a", lambda: done.append("a"))
        undo.commit()
    assert done == []


@pytest.mark.parametrize("ranges,want", [
    ([[{"subnet": "fd00:250::/64"}]], 50),
    ([[{"subnet": "10.250.0.0/24"}], [{"subnet": "fd00:250::/64"}]], 50),
    ([[{"subnet": "10.250.0.0/24"}]], 0),
])
def test_status_50_for_ipv6_ranges_on_a_kernel_without_ipv6(ranges, want, monkeypatch):
    monkeypatch.setattr(wiring, "has_ipv6", lambda: False)
    out = dispatch(env("STATUS"), conf(ipam={"type": "host-local", "ranges": ranges}))
    if want:
        body = error_of(out)
        assert body["code"] == 50 and "no IPv6" in body["msg"], body
    else:
        assert out.exit_code == 0, out


def test_the_cross_node_config_knows_every_family_of_every_node():
    from plugin.cni import netconf

    parsed = netconf.parse(json.loads(conf(backend="vxlan", nodes=[
        {"name": "a", "ip": "10.1.0.1", "ips": ["10.1.0.1", "fd00::1"],
         "podSubnet": "10.2.0.0/24", "podSubnets": ["10.2.0.0/24", "fd00:2::/64"]},
        {"name": "b", "ips": ["fd00::2", "10.1.0.2"],
         "podSubnets": ["fd00:2:0:1::/64", "10.2.1.0/24"]}])))
    a, b = parsed.nodes
    assert [str(ip) for ip in a.ips] == ["10.1.0.1", "fd00::1"]
    assert (str(b.ip), str(b.pod_subnet)) == ("fd00::2", "fd00:2:0:1::/64")  # the first
    assert str(b.ip_of(4)) == "10.1.0.2" and str(b.pod_subnet_of(6)) == "fd00:2:0:1::/64"
    assert parsed.pod_families == (4, 6) and parsed.topology.underlay_family == 4
    assert parsed.pod_mtu == 1450
    v6_only = netconf.parse(json.loads(conf(backend="vxlan", nodes=[
        {"name": "a", "ip": "fd00::1", "podSubnet": "fd00:2::/64"}])))
    assert v6_only.topology.underlay_family == 6 and v6_only.pod_mtu == 1430
    # an old config (no lists) is read as before
    old = netconf.parse(json.loads(conf(backend="host-gw", nodes=[
        {"name": "a", "ip": "10.1.0.1", "podSubnet": "10.2.0.0/24"}])))
    assert old.nodes[0].ips == (old.nodes[0].ip,) and old.pod_families == (4,)
