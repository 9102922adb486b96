"""The shapes of a CNI ADD result, per spec version, written from the spec text (SPEC.md of
0.1.0/0.2.0, 0.3.0/0.3.1, 0.4.0, 1.0.0 and 1.1.0), and what a result must say about itself.

Why pydantic (v2): it is already the harness's validating model (lab.toml), it reports every
wrong field with its location (`ips[0].version`) and input in one pass, and `extra="forbid"`
turns "a field this version does not have" into a finding without hand-written walks.

Versions, from the spec text:
- 0.1.0, 0.2.0: `ip4`/`ip6` objects (`ip`, `gateway`, `routes`), `dns`.
- 0.3.0, 0.3.1, 0.4.0: `interfaces` (`name`, `mac`, `sandbox`), `ips` (`version` "4"|"6",
  `address` CIDR, `gateway`, `interface` index), `routes` (`dst`, `gw`), `dns`.
- 1.0.0: as 0.4.0 without `ips[].version`.
- 1.1.0: 1.0.0 plus interface `mtu`, `socketPath`, `pciID` and route `mtu`, `advmss`,
  `priority`, `table`, `scope`.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5,19}$")   # Ethernet .. InfiniBand


class _Strict(BaseModel):
    # a field the version does not define is a finding: the runtime's types would drop it
    model_config = ConfigDict(extra="forbid", strict=True)


def _cidr(value: str) -> str:
    if "/" not in value:
        raise ValueError("must be an address with its prefix length (CIDR), e.g. 10.0.0.2/24")
    ipaddress.ip_interface(value)
    return value


def _ip(value: str) -> str:
    ipaddress.ip_address(value)
    return value


def _network(value: str) -> str:
    ipaddress.ip_network(value, strict=False)
    return value


def _mac(value: str) -> str:
    if value and not MAC.match(value):
        raise ValueError("is not a hardware address like 0a:58:0a:f4:00:02")
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]
IP = Annotated[str, AfterValidator(_ip)]
Network = Annotated[str, AfterValidator(_network)]
Mac = Annotated[str, AfterValidator(_mac)]


class DNS(_Strict):
    nameservers: list[str] | None = None
    domain: str | None = None
    search: list[str] | None = None
    options: list[str] | None = None


# -- 0.1.0 / 0.2.0 ---------------------------------------------------------------------------
class LegacyRoute(_Strict):
    dst: Network
    gw: IP | None = None


class LegacyIP(_Strict):
    ip: Cidr
    gateway: IP | None = None
    routes: list[LegacyRoute] | None = None


class Result020(_Strict):
    cniVersion: str
    ip4: LegacyIP | None = None
    ip6: LegacyIP | None = None
    dns: DNS | None = None


# -- 0.3.0 .. 1.1.0 --------------------------------------------------------------------------
class Interface(_Strict):
    name: str = Field(min_length=1)
    mac: Mac | None = None
    sandbox: str | None = None


class Interface110(Interface):
    mtu: int | None = None
    socketPath: str | None = None
    pciID: str | None = None


class IPConfig(_Strict):
    address: Cidr
    gateway: IP | None = None
    interface: int | None = Field(default=None, ge=0)


class IPConfig040(IPConfig):
    version: Literal["4", "6"]


class Route(_Strict):
    dst: Network
    gw: IP | None = None


class Route110(Route):
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None


class Result040(_Strict):
    cniVersion: str
    interfaces: list[Interface] | None = None
    ips: list[IPConfig040] | None = None
    routes: list[Route] | None = None
    dns: DNS | None = None


class Result100(Result040):
    ips: list[IPConfig] | None = None        # type: ignore[assignment]


class Result110(Result100):
    interfaces: list[Interface110] | None = None   # type: ignore[assignment]
    routes: list[Route110] | None = None           # type: ignore[assignment]


RESULT_MODELS: dict[str, type[BaseModel]] = {
    "0.1.0": Result020, "0.2.0": Result020,
    "0.3.0": Result040, "0.3.1": Result040, "0.4.0": Result040,
    "1.0.0": Result100, "1.1.0": Result110,
}


def _where(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "result"


def shape_findings(result: Any, version: str) -> list[str]:
    """What in result breaks the shape of `version`'s result (empty: none)."""
    model = RESULT_MODELS.get(version)
    if model is None:
        return [f"cniVersion {version!r} is not a CNI version this judge knows "
                f"({', '.join(RESULT_MODELS)})"]
    if not isinstance(result, dict):
        return [f"the result is not a JSON object: {str(result)[:80]}"]
    try:
        model.model_validate(result)
    except ValidationError as e:
        return [_finding(err, version) for err in e.errors()]
    return []


def _finding(err: Any, version: str) -> str:
    where, given = _where(tuple(err["loc"])), err.get("input")
    if err["type"] == "extra_forbidden":
        return f"{where}: not a field of a {version} result (it says {given!r})"
    if err["type"] == "missing":
        return f"{where}: required in a {version} result, missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg} (it says {given!r})"


def self_findings(result: dict[str, Any], config_version: str) -> list[str]:
    """What a well-shaped result must also say about itself: the config's cniVersion, interface
    indexes in range, each address's family matching its gateway and declared version."""
    found = []
    said = result.get("cniVersion")
    if said != config_version:
        found.append(f"cniVersion: the config asks for {config_version}, the result says "
                     f"{said!r}")
    interfaces = result.get("interfaces") or []
    for n, ip in enumerate(result.get("ips") or []):
        if not isinstance(ip, dict):
            continue
        index = ip.get("interface")
        if isinstance(index, int) and not 0 <= index < len(interfaces):
            found.append(f"ips[{n}].interface: {index} points past interfaces "
                         f"(it has {len(interfaces)})")
        try:
            family = ipaddress.ip_interface(str(ip.get("address"))).version
        except ValueError:
            continue
        if ip.get("version") not in (None, str(family)):
            found.append(f"ips[{n}].version: says {ip['version']!r} for the IPv{family} "
                         f"address {ip['address']}")
        gateway = ip.get("gateway")
        if gateway and ipaddress.ip_address(gateway).version != family:
            found.append(f"ips[{n}].gateway: {gateway} is not IPv{family} like {ip['address']}")
    for n, route in enumerate(result.get("routes") or []):
        if isinstance(route, dict) and route.get("gw"):
            try:
                same = (ipaddress.ip_network(route["dst"], strict=False).version
                        == ipaddress.ip_address(route["gw"]).version)
            except ValueError:
                continue
            if not same:
                found.append(f"routes[{n}]: gateway {route['gw']} for {route['dst']} is of "
                             "the other family")
    return found
