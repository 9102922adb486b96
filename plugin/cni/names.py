"""What CNI accepts as a container ID, a network name and an interface name (libcni's
ValidateContainerID / ValidateNetworkName / ValidateInterfaceName)."""
from __future__ import annotations

import re

# Matched with fullmatch (never match with "$", which accepts a trailing newline). Sizes are
# bytes, measured with surrogatepass: a lone surrogate from JSON ("\ud800") counts, never raises.
ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
# Container IDs are 64 hex digits in practice. The attachment alias a host veth carries,
# "cnilab/<network>/<containerID>/<ifname>" (plugin.cni.wiring.attachment_alias), must fit
# IFALIASZ - 1 = 255 bytes: 7 + 100 + 1 + 100 + 1 + 15 = 224.
MAX_ID_BYTES = 100
MAX_IFNAME_BYTES = 15  # IFNAMSIZ - 1


def ifname_problem(name: str) -> str:
    """Why `name` cannot be an interface name ("" when it can)."""
    if not name:
        return "is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_IFNAME_BYTES:
        return f"is longer than {MAX_IFNAME_BYTES} bytes"
    if name in (".", ".."):
        return "cannot be . or .."
    if any(c in name for c in "/:") or any(c.isspace() for c in name):
        return "contains '/', ':' or whitespace"
    return ""


def id_problem(what: str) -> str:
    """Why `what` cannot be a container ID or network name ("" when it can)."""
    if len(what.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return f"is longer than {MAX_ID_BYTES} bytes"
    if not ID_RE.fullmatch(what):
        return "is invalid: letters, digits, '_', '.', '-', starting with a letter or digit"
    return ""
