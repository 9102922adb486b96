"""What can go wrong programming the way to other nodes, as three kinds the CNI plugin maps
to its error codes (plugin.cni.commands): the datapath knows nothing of CNI."""
from __future__ import annotations


class CrossNodeError(Exception):
    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


class Misconfigured(CrossNodeError):
    """The node list or the vxlan settings cannot work (a config error)."""

    def __init__(self, field: str, why: str, details: str = "") -> None:
        super().__init__(f"{field}: {why}", details)
        self.field = field
        self.why = why


class Busy(CrossNodeError):
    """Another call holds this node's lock for too long: try again later."""


class ProgrammingFailed(CrossNodeError):
    """The kernel refused a route, device, neighbour or FDB entry."""
