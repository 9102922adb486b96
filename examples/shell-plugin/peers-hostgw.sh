#!/bin/sh
# plugin.node_setup for myptp: what makes it cross-node. Each node routes every other node's
# pod subnet via that node (host-gw), from the PEERS list the lab hands every node. Safe to
# repeat: `ip route replace`.
set -eu
for peer in $(printf '%s' "$PEERS" | jq -r '.[] | "\(.podSubnet),\(.ip)"'); do
  ip route replace "${peer%,*}" via "${peer#*,}"
done
sysctl -qw net.ipv4.ip_forward=1
