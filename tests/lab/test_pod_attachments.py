"""Several attachments per pod: `lab pod add NODE POD --ifname net2` adds the network once more
into the pod's namespace (same container ID, another CNI_IFNAME, as Multus adds net1, net2);
`cni check --ifname` picks one; `pod del` DELs them all. On a real netns lab."""
from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from lab.cli import main

pytestmark = pytest.mark.root

# Both attachments come from one network: Debian's macvlan on the node's underlay interface,
# no routes (a ptp-like plugin routes the pod subnet over each interface, and the second route
# collides with the first: ours refuses it, saying so).
CONFIG = """
[lab]
name = "{name}"

[[nodes]]
name = "node1"

[network]
underlay = "10.99.0.0/24"
pod_cidr = "10.244.0.0/16"

[plugin]
path = "/usr/lib/cni/macvlan"

[plugin.config]
cniVersion = "1.0.0"
master = "eth0"
mode = "bridge"
[plugin.config.ipam]
type = "host-local"
ranges = [[{{ subnet = "${{NODE_POD_SUBNET}}" }}]]
"""


def test_a_second_attachment_into_the_same_pod_and_del_of_both(tmp_path, capsys):
    if not Path("/usr/lib/cni/macvlan").exists():
        pytest.skip("needs Debian's containernetworking-plugins (/usr/lib/cni/macvlan)")
    name = "t7" + secrets.token_hex(3)
    config = tmp_path / "lab.toml"
    config.write_text(CONFIG.format(name=name))
    cfg = ["-c", str(config)]
    try:
        assert main([*cfg, "up"]) == 0
        assert main([*cfg, "exec", "node1", "--", "ip", "-br", "link"]) == 0
        links_before = capsys.readouterr().out.count("\n")
        assert main([*cfg, "pod", "add", "node1", "multi"]) == 0
        assert main([*cfg, "pod", "add", "node1", "multi", "--ifname", "net2"]) == 0
        first, second = [line.split() for line in capsys.readouterr().out.splitlines()
                         if line.startswith("multi")]
        assert (first[2], second[2]) == ("eth0", "net2") and first[3] != second[3]
        assert main([*cfg, "pod", "exec", "multi", "--", "ip", "-br", "addr"]) == 0
        addrs = capsys.readouterr().out
        assert f"{first[3]}/24" in addrs and f"{second[3]}/24" in addrs and "net2" in addrs

        leases = Path(f"/var/lib/cnilab/{name}/node1/ipam/{name}")
        assert sorted(p.name for p in leases.glob("10.244.*")) == sorted([first[3], second[3]])
        assert main([*cfg, "pod", "ls", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert sorted(r["ifname"] for r in rows) == ["eth0", "net2"]
        assert len({r["container_id"] for r in rows}) == 1        # one container, two ifnames

        assert main([*cfg, "cni", "check", "multi", "--ifname", "net2"]) == 0
        assert main([*cfg, "cni", "check", "multi", "--ifname", "net9"]) == 1
        assert "pod multi has no attachment on net9" in capsys.readouterr().err
        assert main([*cfg, "pod", "add", "node1", "multi", "--ifname", "net2"]) == 1
        assert "pod multi already has net2" in capsys.readouterr().err

        assert main([*cfg, "pod", "del", "multi"]) == 0
        assert "DEL of its eth0, net2 attachments" in capsys.readouterr().err
        assert main([*cfg, "pod", "ls", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []
        assert main([*cfg, "exec", "node1", "--", "ip", "-br", "link"]) == 0
        assert capsys.readouterr().out.count("\n") == links_before    # nothing left on node
        assert not [p for p in leases.glob("10.244.*")], "a lease outlived pod del"
    finally:
        main([*cfg, "down"])
