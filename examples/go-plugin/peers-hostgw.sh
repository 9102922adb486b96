#!/bin/sh
# plugin.node_setup for go-ptp on any node with python3 (container and VM nodes have no jq):
# each node routes every other node's pod subnet via that node (host-gw), from the PEERS list
# the lab hands every node. Safe to repeat: `ip route replace`.
set -eu
python3 -c '
import json, os, subprocess
for peer in json.loads(os.environ["PEERS"]):
    subprocess.run(["ip", "route", "replace", peer["podSubnet"], "via", peer["ip"]], check=True)
'
sysctl -qw net.ipv4.ip_forward=1
