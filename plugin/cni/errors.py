"""CNI error codes and the one exception type every command raises."""
from __future__ import annotations

from typing import Optional

# Codes from the CNI spec (SPEC.md, "Error").
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
STATUS_CANNOT_ADD = 50
STATUS_ATTACHMENTS_AFFECTED = 51
# Plugin-defined codes start at 100.
IPAM_FAILURE = 100
INTERFACE_EXISTS = 101
NETLINK_FAILURE = 102
CHECK_MISMATCH = 103
CROSS_NODE_FAILURE = 104
GC_INCOMPLETE = 105


class CniError(Exception):
    """An error the dispatcher prints as CNI error JSON on stdout (exit 1)."""

    def __init__(self, code: int, msg: str, details: Optional[str] = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details or ""

    def to_json(self, cni_version: str) -> dict:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg,
                "details": self.details}
