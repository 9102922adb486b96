"""Plugins chained after the plugin under test do what they claim, on the pod and its node.

A conflist's later plugins get the first one's result as prevResult and act on the pod it made:
tuning's sysctls are set in every pod and its MAC on the pod's interface; bandwidth shapes the
pod's host-side interface; portmap's DNAT rules exist after ADD, carry traffic to the pod, and
are gone after DEL. The capability checks make pods with capability arguments, which only a
runtime the harness is (netns and VM labs) can pass; every check skips, saying why, where the
network chains no such plugin.
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from lab.api import AttachOptions, Cluster, Node, Pod

POD_MAC = "02:c0:ff:ee:00:42"
HOST_PORT, POD_PORT = 18080, 8080
SHAPED_RATE = 10_000_000      # bit/s
LISTEN_DEADLINE = 20          # seconds the pod's TCP listener lives; every probe ends before


def chained_plugins(cluster: Cluster) -> list[dict[str, Any]]:
    """The configs of the plugins after the first one on the first node ([] without a chain)."""
    spec = getattr(cluster, "spec", None)
    configs = getattr(spec, "configs", None) or {}
    first: Any = next(iter(configs.values()), {})
    plugins = first.get("plugins") if isinstance(first, dict) else None
    return list(plugins[1:]) if isinstance(plugins, list) else []


def chained(cluster: Cluster, plugin_type: str, capability: str | None = None) -> dict[str, Any]:
    """The chained plugin's config, or a skip saying why this check does not apply."""
    found = [p for p in chained_plugins(cluster) if p.get("type") == plugin_type]
    if not found:
        pytest.skip(f"the network chains no {plugin_type} plugin")
    conf = found[0]
    if capability is not None:
        if not (conf.get("capabilities") or {}).get(capability):
            pytest.skip(f"{plugin_type} does not declare the {capability} capability")
        if not getattr(cluster, "takes_attach_options", False):
            pytest.skip("only a netns or VM lab's runtime passes capability arguments")
    return conf


def node_of(cluster: Cluster, pod: Pod) -> Node:
    return next(n for n in cluster.nodes() if n.name == pod.node)


def host_interface(cluster: Cluster, pod: Pod) -> str:
    """The pod's host-side interface, as the result the chain ended with names it."""
    result = cluster.add_result(pod) or {}
    host_side = [i.get("name") for i in result.get("interfaces") or []
                 if isinstance(i, dict) and not i.get("sandbox")]
    if not host_side:
        pytest.skip("the ADD result names no host-side interface to look at")
    return str(host_side[0])


def nat_rules(node: Node) -> str:
    res = node.run(["iptables-save", "-t", "nat"], timeout=30)
    assert res.ok, f"iptables-save on {node.name}: {res.stderr}"
    return res.stdout


def test_tuning_sets_its_sysctls_in_every_pod(cluster, pod_per_node):
    conf = chained(cluster, "tuning")
    sysctls = conf.get("sysctl") or {}
    if not sysctls:
        pytest.skip("tuning sets no sysctl")
    for node, pod in pod_per_node.items():
        for key, wanted in sysctls.items():
            got = pod.exec(["sysctl", "-n", key])
            assert got.ok, f"{pod.name} on {node}: no sysctl {key}: {got.stderr.strip()}"
            assert got.stdout.strip() == str(wanted), (
                f"{pod.name} on {node}: {key} is {got.stdout.strip()}, tuning claims {wanted}")


def test_tuning_gives_the_pod_the_mac_the_runtime_asks_for(cluster, pod_factory):
    chained(cluster, "tuning", "mac")
    node = cluster.nodes()[0]
    pod = pod_factory(node, "mac", AttachOptions(capability_args={"mac": POD_MAC}))
    link = pod.exec(["cat", f"/sys/class/net/{pod.ifname}/address"])
    assert link.stdout.strip() == POD_MAC, (
        f"{pod.ifname} of {pod.name} has MAC {link.stdout.strip()}, the runtime asked {POD_MAC}")
    result = cluster.add_result(pod) or {}
    macs = [i.get("mac") for i in result.get("interfaces") or []
            if i.get("name") == pod.ifname and i.get("sandbox")]
    assert macs == [POD_MAC], f"the final ADD result says {pod.ifname} has MAC {macs}"


def test_bandwidth_shapes_the_pods_host_side_as_asked(cluster, pod_factory):
    chained(cluster, "bandwidth", "bandwidth")
    node = cluster.nodes()[0]
    shaping = {"ingressRate": SHAPED_RATE, "ingressBurst": SHAPED_RATE}
    pod = pod_factory(node, "shaped", AttachOptions(capability_args={"bandwidth": shaping}))
    host_if = host_interface(cluster, pod)
    qdisc = node.run(["tc", "qdisc", "show", "dev", host_if])
    assert qdisc.ok, f"{node.name}: tc on {host_if}: {qdisc.stderr.strip()}"
    assert any(q in qdisc.stdout for q in (" tbf ", " htb ")), (
        f"{node.name}: {host_if} of {pod.name} is not shaped: {qdisc.stdout.strip()}")
    cluster.delete_pod(pod)
    after = node.run(["tc", "qdisc", "show", "dev", host_if])
    assert not after.ok or not any(q in after.stdout for q in (" tbf ", " htb ")), (
        f"{node.name}: {host_if} is still shaped after DEL: {after.stdout.strip()}")


def test_portmap_forwards_the_host_port_to_the_pod_until_del(cluster, pod_factory):
    chained(cluster, "portmap", "portMappings")
    node = cluster.nodes()[0]
    mapping = {"hostPort": HOST_PORT, "containerPort": POD_PORT, "protocol": "tcp"}
    pod = pod_factory(node, "mapped", AttachOptions(capability_args={"portMappings": [mapping]}))
    rules = nat_rules(node)
    target = f"--to-destination {pod.ip}:{POD_PORT}"
    assert target in rules and f"--dport {HOST_PORT}" in rules, (
        f"{node.name}: no DNAT of port {HOST_PORT} to {pod.ip}:{POD_PORT} after ADD")

    client = cluster.nodes()[-1]
    listen = pod.exec(["sh", "-c", _LISTENER, "sh", str(POD_PORT), str(LISTEN_DEADLINE)])
    assert listen.ok, f"{pod.name}: the test's listener did not start: {listen.stderr}"
    reply = _connect(client, node.address, HOST_PORT)
    assert reply == "pod", (f"{client.name} → {node.name}:{HOST_PORT} did not reach {pod.name} "
                            f"through portmap's DNAT (got {reply!r})")

    cluster.delete_pod(pod)
    left = [line for line in nat_rules(node).splitlines() if target in line]
    assert not left, f"{node.name}: portmap's DNAT to {pod.name} outlived its DEL: {left}"


# A one-shot TCP server in the pod saying "pod", gone after $2 seconds whatever happens.
_LISTENER = ("timeout \"$2\" python3 -c 'import socket,sys\n"
             "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             "s.bind((\"0.0.0.0\", int(sys.argv[1]))); s.listen(1)\n"
             "c,_=s.accept(); c.sendall(b\"pod\"); c.close()' \"$1\" >/dev/null 2>&1 &")
_CLIENT = ("import socket,sys\n"
           "c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
           "print(c.recv(16).decode())")


def _connect(client: Node, address: str, port: int) -> str:
    """What a TCP connection from `client` to address:port reads; retried until the pod's
    listener is up, within the listener's own lifetime."""
    deadline = time.monotonic() + LISTEN_DEADLINE / 2
    got = ""
    while time.monotonic() < deadline:
        res = client.run(["python3", "-c", _CLIENT, address, str(port)], timeout=10)
        lines = (res.stdout + res.stderr).strip().splitlines()
        got = lines[-1] if lines else f"rc={res.rc}"
        if res.ok:
            return res.stdout.strip()
        time.sleep(0.2)
    return got
