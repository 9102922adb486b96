"""Kept import path (tests/lab/k3s and docs/k8s.md use `plugin.netconf.parse`): the network
configuration lives in plugin.cni.netconf."""
from plugin.cni.netconf import ClusterNode, NetConf, VxlanConf, parse

__all__ = ["ClusterNode", "NetConf", "VxlanConf", "parse"]
