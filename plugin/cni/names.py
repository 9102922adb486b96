"""What CNI accepts as a container ID, a network name and an interface name (libcni's
ValidateContainerID / ValidateNetworkName / ValidateInterfaceName)."""
from __future__ import annotations

import re

ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def ifname_problem(name: str) -> str:
    """Why `name` cannot be an interface name ("" when it can)."""
    if not name:
        return "is empty"
    if len(name) > 15:
        return "is longer than 15 characters"
    if name in (".", ".."):
        return "cannot be . or .."
    if any(c in name for c in "/:") or any(c.isspace() for c in name):
        return "contains '/', ':' or whitespace"
    return ""
