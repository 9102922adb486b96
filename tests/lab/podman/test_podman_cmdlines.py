"""The podman provider's command lines and parsers, as strings: no podman, no root."""
from __future__ import annotations

import ipaddress
from pathlib import Path

from lab.nodes.providers.podman import cmdlines, image
from lab.nodes.providers.podman.cmdlines import NodeRun, Storage
from lab.nodes.providers.podman.node import cgroup_dirs, nsenter_argv

STORAGE = Storage(Path("/var/lib/cnilab-podman"))


def test_every_podman_call_uses_the_harness_storage_never_the_hosts():
    argv = STORAGE.argv("ps")
    assert argv[:9] == ["podman", "--root", "/var/lib/cnilab-podman/storage",
                        "--runroot", "/run/cnilab-podman",
                        "--volumepath", "/var/lib/cnilab-podman/volumes",
                        "--tmpdir", "/run/cnilab-podman/libpod"]
    assert argv[-5:] == ["--runtime", "runc", "--cgroup-manager", "cgroupfs", "ps"]
    assert len(str(cmdlines.RUNROOT)) <= 50     # podman refuses a longer run root


def test_a_node_is_a_privileged_container_with_its_k3s_dirs_on_named_volumes():
    spec = NodeRun("lab1", "node2", "agent", "localhost/cnilab/node:x", "/etc/lab.toml",
                   nofile=1024, nproc=512)
    argv = cmdlines.run_argv(STORAGE, spec)
    line = " ".join(argv)
    assert argv[argv.index("run") + 1:argv.index("run") + 4] == ["--detach", "--name",
                                                                   "cnilab-lab1-node2"]
    for flag in ("--privileged", "--network none", "--cgroupns private", "--pull never",
                 "--hostname node2", "--ulimit nofile=1024:1024", "--ulimit nproc=512:512",
                 "--tmpfs /run:rw,exec,nosuid,mode=0755", "--tmpfs /tmp:rw,exec,mode=1777",
                 "--label cnilab.lab=lab1", "--label cnilab.node=node2",
                 "--label cnilab.role=agent", "--label cnilab.config=/etc/lab.toml",
                 "--volume cnilab-lab1-node2-rancher:/var/lib/rancher/k3s",
                 "--volume cnilab-lab1-node2-kubelet:/var/lib/kubelet",
                 "--volume cnilab-lab1-node2-cni:/var/lib/cni",
                 "--volume cnilab-lab1-node2-etccni:/etc/cni",
                 "--volume cnilab-lab1-node2-optcni:/opt/cni", "--pids-limit -1",
                 "--tmpfs /var/lib/rancher/k3s/agent/containerd:rw,exec,mode=0700"):
        assert flag in line, flag
    assert "/lib/modules" not in line           # only where the host has modules
    assert argv[-1] == "localhost/cnilab/node:x"
    with_modules = " ".join(cmdlines.run_argv(STORAGE, NodeRun("l", "n", "server", "i",
                                                               modules=True)))
    assert "--volume /lib/modules:/lib/modules:ro" in with_modules
    on_disk = " ".join(cmdlines.run_argv(STORAGE, NodeRun("l", "n", "server", "i",
                                                          containerd_tmpfs=False)))
    assert "/var/lib/rancher/k3s/agent/containerd" not in on_disk


def test_listing_and_removal_select_this_lab_only():
    assert cmdlines.list_argv(STORAGE, "lab1")[-6:] == [
        "ps", "--all", "--format", "json", "--filter", "label=cnilab.lab=lab1"]
    assert cmdlines.volumes_argv(STORAGE, "lab1")[-2:] == ["--filter", "name=^cnilab-lab1-"]
    assert cmdlines.remove_argv(STORAGE, ["cnilab-lab1-a"])[-6:] == [
        "rm", "--force", "--volumes", "--time", "0", "cnilab-lab1-a"]


def test_the_switch_gets_the_gateways_and_a_veth_per_new_node():
    cmds = cmdlines.switch_batch({"v-node1": 4242, "v-node2": None}, set(),
                                 {4: "10.99.0.1/24", 6: "fd00:99::1/64"})
    assert cmds == [
        "link add br0 type bridge", "link set lo up", "link set br0 up",
        "addr replace 10.99.0.1/24 dev br0", "addr replace fd00:99::1/64 dev br0 nodad",
        "link add v-node1 type veth peer name eth0 netns 4242",
        "link set v-node1 master br0 up", "link set v-node2 master br0 up"]
    again = cmdlines.switch_batch({"v-node1": None}, {"br0", "v-node1"}, {4: "10.99.0.1/24"})
    assert "link add br0 type bridge" not in again
    assert not any("veth" in c for c in again)


def test_a_port_whose_node_is_new_is_removed_first():
    assert cmdlines.stale_ports({"v-a": 10, "v-b": None, "v-c": 11}, {"v-a", "v-b"}) == [
        "link del v-a"]


def test_long_node_names_get_a_stable_port_name_within_ifnamsiz():
    port = cmdlines.switch_port("a-very-long-node-name")
    assert len(port) <= 15 and port == cmdlines.switch_port("a-very-long-node-name")
    assert cmdlines.switch_port("node1") == "v-node1"


def test_a_node_gets_its_addresses_and_a_default_route_per_family():
    cmds = cmdlines.node_batch({4: "10.99.0.11/24", 6: "fd00:99::11/64"},
                               {4: "10.99.0.1", 6: "fd00:99::1"})
    assert cmds == ["link set lo up", "addr replace 10.99.0.11/24 dev eth0",
                    "addr replace fd00:99::11/64 dev eth0 nodad", "link set eth0 up",
                    "route replace default via 10.99.0.1 dev eth0",
                    "route replace default via fd00:99::1 dev eth0"]


def test_the_gateway_is_the_first_host_of_each_underlay():
    assert cmdlines.gateway(ipaddress.ip_network("10.99.0.0/24")) == "10.99.0.1"
    assert cmdlines.gateway(ipaddress.ip_network("fd00:99::/64")) == "fd00:99::1"


def test_commands_enter_every_namespace_of_the_node():
    assert nsenter_argv(77, ["ip", "route"]) == [
        "nsenter", "--target=77", "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup",
        "--", "ip", "route"]


def test_a_command_joins_the_containers_cgroups_in_every_hierarchy(tmp_path):
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "cgroup").write_text(
        "9:name=systemd:/libpod_parent/libpod-abc\n8:pids:/libpod_parent/libpod-abc\n"
        "2:cpu,cpuacct:/libpod_parent/libpod-abc\n0::/\n")
    mounts = tmp_path / "mountinfo"
    mounts.write_text(
        "30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
        "31 30 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
        "32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "33 30 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        "34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n")
    assert cgroup_dirs(77, proc=tmp_path, mounts=mounts) == [
        Path("/sys/fs/cgroup/systemd/libpod_parent/libpod-abc"),
        Path("/sys/fs/cgroup/pids/libpod_parent/libpod-abc"),
        Path("/sys/fs/cgroup/cpu,cpuacct/libpod_parent/libpod-abc"),
        Path("/sys/fs/cgroup/unified")]


def test_the_node_image_tag_follows_its_recipe():
    ref = image.image_ref("http://deb.debian.org/debian")
    assert ref.startswith("localhost/cnilab/node:bookworm-")
    assert ref == image.image_ref("http://deb.debian.org/debian")
    assert ref != image.image_ref("http://mirror.example/debian")


def test_the_node_image_has_what_nodes_and_k3s_run_and_its_init():
    argv = image.mmdebstrap_argv(Path("/w/rootfs.tar"), "http://deb.debian.org/debian")
    included = argv[[a.startswith("--include=") for a in argv].index(True)][len("--include="):]
    for package in ("python3", "iproute2", "iptables", "nftables", "catatonit", "conntrack",
                    "containernetworking-plugins", "util-linux", "iperf3"):
        assert package in included.split(",")
    assert "--variant=minbase" in argv and argv[-4:-3] == ["/w/rootfs.tar"]
    assert any(image.INIT in a and a.startswith("--customize-hook=") for a in argv)
    imported = image.import_argv(STORAGE, Path("/w/rootfs.tar"), "localhost/cnilab/node:t")
    assert imported[-2:] == ["/w/rootfs.tar", "localhost/cnilab/node:t"]
    assert f'ENTRYPOINT ["{image.INIT}"]' in imported


def test_k3s_labs_give_the_harness_a_port_with_the_second_address_and_no_route():
    cmds = cmdlines.host_link_batch("lab1", False, {4: "10.99.0.2/24", 6: "fd00:99::2/64"})
    assert cmds == ["link add cl-lab1 type veth peer name h-host netns cnilab-lab1-sw",
                    "addr replace 10.99.0.2/24 dev cl-lab1",
                    "addr replace fd00:99::2/64 dev cl-lab1 nodad", "link set cl-lab1 up"]
    assert not any("route" in c or "forward" in c for c in cmds)
    assert cmdlines.host_link_batch("lab1", True, {4: "10.99.0.2/24"})[0].startswith("addr")
    assert cmdlines.host_address(ipaddress.ip_network("10.99.0.0/24")) == "10.99.0.2"
    assert len(cmdlines.host_link("a_twenty_char_name_x")) <= 15


def test_lab_ssh_opens_a_login_shell_in_the_node():
    from lab.nodes.providers.podman.node import ContainerNode

    node = ContainerNode("n1", "10.0.0.11", "/var/lib/cnilab", "cnilab-l-n1", 42)
    assert node.shell_argv() == nsenter_argv(42, ["/bin/bash", "-l"])
    assert node.testinfra_url == "nsenter://42"
