"""Command lines as exact strings: what runs on a node is what these say."""
from __future__ import annotations

import hashlib
import subprocess

from lab.config.k3s import K3sSettings
from lab.kube import cmdlines as c

SHA = "959c9310a6ab893958d1c95bc5d7609de9d7884630c8832180f059369b6dc331"


def test_download_url_escapes_the_plus():
    assert c.download_url("v1.35.0+k3s1", "amd64") == (
        "https://github.com/k3s-io/k3s/releases/download/v1.35.0%2Bk3s1/k3s")
    assert c.download_url("v1.35.0+k3s1", "arm64").endswith("/v1.35.0%2Bk3s1/k3s-arm64")


def test_server_args_exact():
    s = K3sSettings(server_args=["--disable=traefik"], flannel_iface="eth1")
    assert c.server_args(s, c.NodeFacts("node1", "10.99.0.11")) == [
        "server", "--node-name", "node1", "--node-ip", "10.99.0.11",
        "--token-file", "/etc/rancher/k3s/cnilab-token", "--flannel-iface", "eth1",
        "--tls-san", "10.99.0.11", "--write-kubeconfig-mode", "0600", "--disable=traefik"]


def test_lab_interface_and_pause_image_reach_flannel_and_the_kubelet():
    """flannel follows the default route unless told; an isolated lab network has none."""
    node = c.NodeFacts("node2", "10.99.0.12", lab_iface="ens2", pause_image="localhost/p:1")
    args = c.agent_args(K3sSettings(), node, "10.99.0.11")
    assert args[args.index("--flannel-iface") + 1] == "ens2"
    assert args[args.index("--pause-image") + 1] == "localhost/p:1"
    # the config's own choice of interface wins over the one read on the node
    assert "eth9" in c.agent_args(K3sSettings(flannel_iface="eth9"), node, "10.99.0.11")
    assert "ens2" not in c.agent_args(K3sSettings(flannel_iface="eth9"), node, "10.99.0.11")


def test_interface_holding_the_node_address_is_parsed():
    out = ("2: ens2    inet 10.98.0.11/24 metric 1024 brd 10.98.0.255 scope global ens2\\"
           "       valid_lft forever preferred_lft forever\n")
    assert c.parse_interface(out) == "ens2"
    assert c.parse_interface("") is None
    assert c.interface_of("10.98.0.11") == ["ip", "-o", "-4", "addr", "show", "to", "10.98.0.11"]


def test_primary_disables_flannel_and_its_iface():
    s = K3sSettings(primary=True, flannel_iface="eth1")
    args = c.server_args(s, c.NodeFacts("n1", "10.0.0.1", lab_iface="ens2"))
    assert args[-2:] == ["--flannel-backend=none", "--disable-network-policy"]
    assert "--flannel-iface" not in args


def test_agent_joins_the_server_with_the_token_file():
    s = K3sSettings(agent_args=["--node-label=lab=x"])
    assert c.agent_args(s, c.NodeFacts("node2", "10.99.0.12"), "10.99.0.11") == [
        "agent", "--server", "https://10.99.0.11:6443", "--node-name", "node2",
        "--node-ip", "10.99.0.12", "--token-file", "/etc/rancher/k3s/cnilab-token",
        "--node-label=lab=x"]
    assert c.server_url("fd00::1") == "https://[fd00::1]:6443"


def test_unit_exec_line_and_no_token():
    args = c.agent_args(K3sSettings(), c.NodeFacts("node2", "10.99.0.12"), "10.99.0.11")
    unit = c.systemd_unit(args, "demo")
    assert ("ExecStart=/usr/local/bin/k3s agent --server https://10.99.0.11:6443 "
            "--node-name node2 --node-ip 10.99.0.12 --token-file "
            "/etc/rancher/k3s/cnilab-token\n") in unit
    assert "Description=K3s agent (cnilab lab demo)" in unit
    assert "KillMode=process" in unit and "Delegate=yes" in unit
    assert "K3S_TOKEN" not in unit


def test_install_unit_restarts_only_on_change():
    assert c.install_unit("agent") == (
        "set -e; cat > /etc/systemd/system/k3s-agent.service.new; "
        "if cmp -s /etc/systemd/system/k3s-agent.service.new "
        "/etc/systemd/system/k3s-agent.service; then "
        "rm -f /etc/systemd/system/k3s-agent.service.new; action=start; "
        "else mv -f /etc/systemd/system/k3s-agent.service.new "
        "/etc/systemd/system/k3s-agent.service; action=restart; fi; "
        "systemctl daemon-reload; systemctl enable k3s-agent.service; "
        "systemctl $action k3s-agent.service")


def test_install_script_skips_download():
    args = c.server_args(K3sSettings(), c.NodeFacts("n1", "10.0.0.1"))
    assert c.install_with_script(args, "v1.35.0+k3s1") == (
        "INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_VERSION=v1.35.0+k3s1 "
        "INSTALL_K3S_EXEC='server --node-name n1 --node-ip 10.0.0.1 --token-file "
        "/etc/rancher/k3s/cnilab-token --tls-san 10.0.0.1 --write-kubeconfig-mode 0600' "
        "sh /var/lib/rancher/cnilab-install.sh")


def test_connected_install_exact():
    assert c.install_binary_connected("v1.35.0+k3s1", "amd64", SHA) == (
        f"echo '{SHA}  /usr/local/bin/k3s' | sha256sum -c --status - 2>/dev/null && exit 0; "
        "set -e; curl -fsSL --retry 3 -o /usr/local/bin/k3s.cnilab-download "
        "https://github.com/k3s-io/k3s/releases/download/v1.35.0%2Bk3s1/k3s; "
        f"if ! echo '{SHA}  /usr/local/bin/k3s.cnilab-download' | sha256sum -c --status - "
        "2>/dev/null; then rm -f /usr/local/bin/k3s.cnilab-download; "
        f"echo 'checksum mismatch for K3s v1.35.0+k3s1 (amd64): expected {SHA}' >&2; exit 1; fi; "
        "chmod 0755 /usr/local/bin/k3s.cnilab-download; "
        "mv -f /usr/local/bin/k3s.cnilab-download /usr/local/bin/k3s")


def test_binary_check_really_verifies(tmp_path):
    """The checksum test line runs in a real sh: right file passes, altered file fails."""
    binary = tmp_path / "k3s"
    binary.write_bytes(b"pretend k3s")
    good = hashlib.sha256(b"pretend k3s").hexdigest()
    assert subprocess.run(["sh", "-c", c.binary_matches(good, str(binary))]).returncode == 0
    binary.write_bytes(b"tampered")
    assert subprocess.run(["sh", "-c", c.binary_matches(good, str(binary))]).returncode != 0
    assert subprocess.run(["sh", "-c", c.binary_matches(good, str(tmp_path / "none"))]
                          ).returncode != 0


def test_shell_strings_parse():
    for script in (c.install_unit("server"), c.uninstall(), c.prepare_dirs(),
                   c.install_binary_connected("v1.35.0+k3s1", "arm64", SHA)):
        assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0, script


def test_diagnostics_never_include_secrets():
    argvs = c.diagnostics().values()
    assert all(isinstance(a, list) and a for a in argvs)
    assert not any("token" in word or "k3s.yaml" in word for a in argvs for word in a)


def test_dual_stack_primary_cluster_flags_exact():
    """Rendered, not run live: K3s v1.21 (what could be built here) runs dual-stack only with
    a CNI other than flannel, which is primary mode, and needs the plugin's own v6; the flags
    are the documented ones (--cluster-cidr and --service-cidr per family, --node-ip both)."""
    s = K3sSettings(primary=True)
    node = c.NodeFacts("n1", "10.97.0.11", other_ips=("fd00:97::11",))
    args = c.server_args(s, node, ["10.244.0.0/16", "fd00:244::/56"])
    assert args[args.index("--node-ip") + 1] == "10.97.0.11,fd00:97::11"
    assert args[args.index("--cluster-cidr") + 1] == "10.244.0.0/16,fd00:244::/56"
    assert args[args.index("--service-cidr") + 1] == "10.43.0.0/16,fd00:43::/112"
    agent = c.agent_args(s, c.NodeFacts("n2", "10.97.0.12", other_ips=("fd00:97::12",)),
                         "10.97.0.11")
    assert agent[agent.index("--node-ip") + 1] == "10.97.0.12,fd00:97::12"
    single = c.server_args(s, c.NodeFacts("n1", "10.97.0.11"), ["10.244.0.0/16"])
    assert "--service-cidr" not in single
    assert single[single.index("--node-ip") + 1] == "10.97.0.11"


def test_default_route_on_the_lab_interface_exact():
    assert c.default_route_on("eth1", [4]) == (
        "[ -e /sys/class/net/eth1 ] || exit 0; ip -4 route show default | grep -q . || "
        "{ ip -4 route add default dev eth1 metric 4242 && echo IPv4; }")
    assert "ip -6 route add default dev 'a b'" in c.default_route_on("a b", [4, 6])


def test_a_download_base_replaces_the_release_pages_and_keeps_the_checksum():
    line = c.install_binary_connected("v1.35.0+k3s1", "amd64", SHA, "http://10.99.0.1:8080/k3s")
    assert " http://10.99.0.1:8080/k3s/v1.35.0%2Bk3s1/k3s;" in line
    assert f"echo '{SHA}  /usr/local/bin/k3s.cnilab-download' | sha256sum -c" in line


def test_registries_yaml_sends_every_registry_the_lab_pulls_from_to_the_mirror():
    import json

    text = c.registries_yaml("http://10.99.0.1:5000", [
        "docker.io/nicolaka/netshoot:v0.13", "ghcr.io/k8snetworkplumbingwg/multus-cni:v4.2.4-thick",
        "localhost/cnilab/pause:bookworm-1", "busybox"])
    assert json.loads(text) == {"mirrors": {
        "docker.io": {"endpoint": ["http://10.99.0.1:5000"]},
        "ghcr.io": {"endpoint": ["http://10.99.0.1:5000"]}}}
    assert c.image_registry("registry.k8s.io/pause:3.9") == "registry.k8s.io"
    assert c.image_registry("10.0.0.1:5000/x") == "10.0.0.1:5000"


def test_mirror_urls_are_checked_before_they_reach_a_shell():
    import pytest
    from pydantic import ValidationError

    s = K3sSettings(download_base="http://10.99.0.1:8080/k3s/", registry_mirror="http://m:5000")
    assert s.download_base == "http://10.99.0.1:8080/k3s"
    for bad in ("ftp://x", "http://x/$(touch /tmp/x)", "http://x/a b", "http://x/'q'",
                "http://x\n", "10.0.0.1:5000"):
        with pytest.raises(ValidationError, match="is not an http"):
            K3sSettings(registry_mirror=bad)
