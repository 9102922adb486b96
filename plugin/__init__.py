"""cnilab CNI plugin: ptp-style pod wiring plus cross-node routes (host-gw or VXLAN).

Runs on a node's python3 (3.9+): stdlib and pyroute2 only.
"""
