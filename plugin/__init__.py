"""cnilab CNI plugin: ptp-style pod wiring plus cross-node routes (host-gw or VXLAN).

Three parts, each a sub-package, imported in one direction only:
    delivery  -> cni -> crossnode
`cni` is the CNI plugin (dispatcher, commands, IPAM, veth wiring); `crossnode` the datapath
to other nodes' pods; `delivery` the one-file build, its shell prologue and the resident
helper. Runs on a node's python3 (3.9+): stdlib and pyroute2 only.
"""
