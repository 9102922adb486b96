"""Nodes and how they are reached: providers make them (netns, libvirt, existing, vagrant),
SSH and keys reach them, and a node's own share of `lab logs`."""
