"""The libvirt provider: one VM per lab node on a NAT network, reached over SSH.

Per lab: a NAT network with a DHCP reservation per node (fixed IPs = the config's underlay
addresses), a storage pool holding one qcow2 overlay per node over the shared base image and
one cloud-init seed ISO per node, and one domain per node. Domains and the network carry
cnilab metadata (lab, role, node): `nodes()`, `status()` and `destroy()` read libvirt, not a
state file. libvirt has no metadata for pools and volumes; the pool is named after the lab
(`cnilab-<lab>`) and holds nothing else.

Longer than 400 lines: LibvirtProvider is one class over one libvirt connection; images, XML,
seeds, names, the KVM probe and the firewall are already modules of their own.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import socket
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import libvirt

from lab.api import LabError, Node, NodeStatus
from lab.config.libvirt import LibvirtSettings
from lab.nodes.keys import client_keypair, host_keys
from lab.nodes.providers.libvirt import firewall, names, xml
from lab.nodes.providers.libvirt.image_build import default_cache_dir, find_built
from lab.nodes.providers.libvirt.images import BaseImage, resolve_image
from lab.nodes.providers.libvirt.kvm_probe import AccelChoice, choose_accel, find_probe_kernel
from lab.nodes.providers.libvirt.seed import SeedSpec, seed_iso
from lab.nodes.ssh import HostKeyMismatch, SshNode, lab_ssh_dir

if TYPE_CHECKING:
    from lab.config import LabConfig

NODE_STATE_DIR = "/var/lib/cnilab"
SSH_PORT = 22
CONSOLE_TAIL_LINES = 25
T = TypeVar("T")

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown", libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping", libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


def _quiet_libvirt() -> None:
    # libvirt prints every error to stderr by default; ours are raised as LabError instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _err_code(e: libvirt.libvirtError) -> int:
    return e.get_error_code() or 0


def _stderr_report(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _parallel(items: Iterable[T], work: Callable[[T], Any]) -> None:
    """Runs work per item in threads; raises the first failure after all have finished."""
    items = list(items)
    if not items:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        lab_errors = [e for e in errors if isinstance(e, LabError)]
        raise (lab_errors or errors)[0]  # type: ignore[misc]


DEFAULT_CPU_SHARES = 1024      # cgroup v1 cpu.shares (libvirt maps it to v2's cpu.weight)


class LibvirtProvider:
    """lab.api.Provider on libvirt. `report` receives progress lines and warnings."""

    name = "libvirt"

    def __init__(self, config: LabConfig,
                 report: Callable[[str], None] | None = None) -> None:
        _quiet_libvirt()
        self.config = config
        self.settings: LibvirtSettings = config.libvirt or LibvirtSettings()
        self.lab = names.check_lab_name(config.name)
        self.node_names = [names.check_node_name(n.name) for n in config.nodes]
        subnet = config.network.underlay_nets.get(4)
        if not isinstance(subnet, IPv4Network):
            raise LabError("libvirt labs need an IPv4 underlay (the nodes get it by DHCP; a v6 "
                           "one can come beside it)",
                           hint='underlay = ["192.168.213.0/24", "fd00:213::/64"]')
        self.subnet: IPv4Network = subnet
        v6 = config.network.underlay_nets.get(6)
        self.subnet6: IPv6Network | None = v6 if isinstance(v6, IPv6Network) else None
        self.addresses6 = {name: str(ip) for name, ip in
                           config.underlay_addresses_by_family().get(6, {}).items()}
        self.addresses: dict[str, IPv4Address] = {
            name: IPv4Address(ip) for name, ip in config.underlay_addresses_by_family()[4].items()}
        self.harness_dir = config.harness_dir
        self.report = report or _stderr_report
        self.accel: AccelChoice | None = None
        self._conn: libvirt.virConnect | None = None

    # -- connection ------------------------------------------------------------------------------
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            try:
                self._conn = libvirt.open(self.settings.uri)
            except libvirt.libvirtError as e:
                raise LabError(f"cannot connect to libvirt at {self.settings.uri}: "
                               f"{e.get_error_message()}",
                               hint="is libvirtd running? (without systemd: "
                                    "`bash scripts/start-services.sh`); check [libvirt] uri"
                               ) from None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None

    @property
    def is_test_driver(self) -> bool:
        return bool(self.conn().getType().lower() == "test")

    @property
    def is_local(self) -> bool:
        parsed = urllib.parse.urlparse(self.settings.uri)
        return not parsed.hostname and "+" not in parsed.scheme

    # -- names -----------------------------------------------------------------------------------
    @property
    def network_name(self) -> str:
        return names.network_name(self.lab)

    @property
    def pool_name(self) -> str:
        return names.pool_name(self.lab)

    @property
    def pool_path(self) -> Path:
        return self.settings.pool_dir / self.pool_name

    def console_log(self, node: str) -> Path:
        return self.settings.console_log_dir / f"{names.domain_name(self.lab, node)}-console.log"

    def qemu_log(self, node: str) -> Path:
        """libvirt's own log of the qemu process (command line, qemu errors)."""
        return self.settings.console_log_dir / f"{names.domain_name(self.lab, node)}.log"

    def _cache_dir(self) -> Path:
        return self.settings.image_cache or default_cache_dir()

    # -- finding what the lab made ---------------------------------------------------------------
    def _lab_domains(self) -> dict[str, libvirt.virDomain]:
        """node name -> domain, for every domain whose metadata names this lab."""
        found = {}
        for dom in self.conn().listAllDomains(0):
            try:
                tag = xml.read_tag(dom.XMLDesc(0))
            except libvirt.libvirtError:
                continue      # removed while we looked
            if tag and tag.lab == self.lab and tag.role == "node":
                found[tag.node] = dom
        return found

    def _lab_networks(self) -> list[libvirt.virNetwork]:
        found = []
        for net in self.conn().listAllNetworks(0):
            try:
                tag = xml.read_tag(net.XMLDesc(0))
            except libvirt.libvirtError:
                continue
            if tag and tag.lab == self.lab and tag.role == "network":
                found.append(net)
        return found

    def _lab_pool(self) -> libvirt.virStoragePool | None:
        try:
            return self.conn().storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError as e:
            if _err_code(e) == libvirt.VIR_ERR_NO_STORAGE_POOL:
                return None
            raise

    def reserved_addresses(self) -> dict[str, str]:
        """node -> IP from the lab network's DHCP reservations (what libvirt hands out)."""
        out: dict[str, str] = {}
        for net in self._lab_networks():
            root = ET.fromstring(net.XMLDesc(0))
            for host in root.iterfind("ip/dhcp/host"):
                if host.get("name") and host.get("ip"):
                    out[host.get("name", "")] = host.get("ip", "")
        return out

    # -- nodes -----------------------------------------------------------------------------------
    def _ssh_node(self, node: str, address: str) -> SshNode:
        key_path, _ = client_keypair(self.harness_dir)
        return SshNode(node, address, host_key=host_keys(self.harness_dir, node),
                       key_path=key_path, files_dir=lab_ssh_dir(self.harness_dir),
                       user=self.settings.user, state_dir=NODE_STATE_DIR)

    def nodes(self) -> list[Node]:
        domains = self._lab_domains()
        reserved = self.reserved_addresses()
        ordered = [n for n in self.node_names if n in domains]
        ordered += sorted(n for n in domains if n not in self.node_names)
        return [self._ssh_node(n, reserved.get(n) or str(self.addresses.get(n, "")))
                for n in ordered]

    def status(self) -> list[NodeStatus]:
        domains = self._lab_domains()
        reserved = self.reserved_addresses()
        out = []
        for node in [*self.node_names, *sorted(set(domains) - set(self.node_names))]:
            address = reserved.get(node) or str(self.addresses.get(node, ""))
            dom = domains.get(node)
            if dom is None:
                out.append(NodeStatus(node, address, "missing"))
                continue
            state, _reason = dom.state(0)
            root_type = ET.fromstring(dom.XMLDesc(0)).get("type", "")
            out.append(NodeStatus(node, address, _STATES.get(state, "unknown"), {
                "domain": dom.name(), "virt_type": root_type,
                "accel": {"kvm": "kvm", "qemu": "tcg"}.get(root_type, root_type),
                "console_log": str(self.console_log(node)),
            }))
        return out

    # -- provision -------------------------------------------------------------------------------
    def provision(self) -> list[Node]:
        started = time.monotonic()
        conn = self.conn()
        image = resolve_image(self.settings.image, self._cache_dir(), build_if_missing=True,
                              report=self.report)
        domain_type = self._domain_type(image)
        self._ensure_network()
        pool = self._ensure_pool()
        key_path, public_line = client_keypair(self.harness_dir)
        del key_path

        def create(node: str) -> None:
            self._ensure_node(conn, pool, node, image, domain_type, public_line)

        _parallel(self.node_names, create)
        self.report(f"{len(self.node_names)} VMs started after "
                    f"{time.monotonic() - started:.1f} s; waiting for SSH")
        nodes = [self._ssh_node(n, str(self.addresses[n])) for n in self.node_names]
        if not self.is_test_driver:
            self._wait_for_ssh(nodes)
            self.report(f"all nodes answer SSH after {time.monotonic() - started:.1f} s")
            if self.subnet6 is not None:
                _parallel(nodes, self._address_v6)
        return list(nodes)

    def _address_v6(self, node: Node) -> None:
        """The node's v6 underlay address, static, on the interface holding its v4 one; kept
        by networkd across reboots. nodad: the lab chose it, nothing else holds it."""
        assert self.subnet6 is not None
        address = f"{self.addresses6[node.name]}/{self.subnet6.prefixlen}"
        script = (
            'set -e; dev=$(ip -o -4 addr show to "$1" | awk \'{print $2; exit}\'); '
            '[ -n "$dev" ] || { echo "no interface holds $1" >&2; exit 1; }; '
            'ip -6 addr replace "$2" dev "$dev" nodad; '
            "d=/etc/systemd/network/90-cnilab-dhcp.network.d; mkdir -p $d; "
            'printf "[Network]\\nAddress=%s\\n" "$2" > $d/cnilab-v6.conf')
        res = node.run(["sh", "-c", script, "sh", node.address, address], timeout=60)
        if not res.ok:
            raise LabError(f"cannot give {node.name} its IPv6 underlay address {address}",
                           where=node.name, output=res.stderr or res.stdout)

    def _domain_type(self, image: BaseImage) -> str:
        if self.is_test_driver:
            return "test"
        kernel = image.kernel
        if kernel is None:
            built = find_built(self._cache_dir())
            kernel = find_probe_kernel([built.kernel] if built else [])
        self.accel = choose_accel(self.settings.accel, kernel=kernel, local=self.is_local)
        if self.accel.warning:
            self.report(f"warning: {self.accel.warning}")
        else:
            self.report(f"accelerator: {self.accel.accel} ({self.accel.reason})")
        return self.accel.domain_type

    def _network_spec(self) -> xml.NetworkSpec:
        return xml.NetworkSpec(
            name=self.network_name,
            tag=xml.LabTag(self.lab, "network", ip_forward_before=(
                firewall.read_ip_forward() if self.is_local else "")),
            bridge=names.bridge_name(self.lab),
            subnet=self.subnet,
            host_address=names.host_address(self.subnet),
            dhcp_range=names.dhcp_range(self.subnet),
            reservations=[(n, names.mac_address(self.lab, n), self.addresses[n])
                          for n in self.node_names],
            forward=self.settings.forward,
            subnet6=self.subnet6,
        )

    def _ensure_network(self) -> libvirt.virNetwork:
        conn = self.conn()
        ours = self._lab_networks()
        if ours:
            net = ours[0]
            self._add_missing_reservations(net)
        else:
            try:
                conn.networkLookupByName(self.network_name)
            except libvirt.libvirtError:
                pass
            else:
                raise LabError(f"a libvirt network named {self.network_name} exists but was "
                               "not made by this lab", hint="remove it or rename the lab")
            try:
                net = conn.networkDefineXML(xml.network_xml(self._network_spec()))
            except libvirt.libvirtError as e:
                raise LabError(f"cannot define the lab network {self.network_name}: "
                               f"{e.get_error_message()}",
                               hint=f"does [network] underlay {self.subnet} collide with "
                                    "another network on this host?") from None
        if not net.isActive():
            if self.is_local and not self.is_test_driver:
                firewall.ensure_libvirt_chains()   # an earlier `lab down` may have removed them
            try:
                net.create()
            except libvirt.libvirtError as e:
                raise LabError(f"cannot start the lab network {self.network_name}: "
                               f"{e.get_error_message()}",
                               hint=f"is {self.subnet} already routed on this host?") from None
        return net

    def _add_missing_reservations(self, net: libvirt.virNetwork) -> None:
        """Nodes added to the config since the network was made get their fixed IP too."""
        root = ET.fromstring(net.XMLDesc(0))
        reserved = {h.get("name") for h in root.iterfind("ip/dhcp/host")}
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        if net.isActive():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        for node in self.node_names:
            if node in reserved:
                continue
            host = (f"<host mac='{names.mac_address(self.lab, node)}' name='{node}' "
                    f"ip='{self.addresses[node]}'/>")
            try:
                net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                           libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host, flags)
            except libvirt.libvirtError as e:
                raise LabError(f"cannot reserve {self.addresses[node]} for node {node} on "
                               f"{self.network_name}: {e.get_error_message()}",
                               hint="`lab down` and `lab up` again to remake the network"
                               ) from None

    def _ensure_pool(self) -> libvirt.virStoragePool:
        pool = self._lab_pool()
        if pool is None:
            pool = self.conn().storagePoolDefineXML(xml.pool_xml(self.pool_name, self.pool_path))
            pool.build(0)   # makes the directory
        if not pool.isActive():
            pool.create(0)
        return pool

    def _volume(self, pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as e:
            if _err_code(e) == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise

    @property
    def emulated(self) -> bool:
        """The VMs run under TCG (known once provision() chose the accelerator)."""
        return self.accel is not None and self.accel.accel == "tcg"

    def _cpu_shares(self, node: str) -> int:
        """The K3s server's VM first when the host's cores are short (TCG on a laptop): its
        API server starved by the agents' VMs timed every request out and never recovered
        (3 VMs on 2 cores). Four times an agent's share; no effect on an idle host."""
        roles = {n.name: n.role for n in self.config.nodes}
        if self.config.k3s is None or roles.get(node) != "server":
            return 0
        return 4 * DEFAULT_CPU_SHARES

    def _ensure_node(self, conn: libvirt.virConnect, pool: libvirt.virStoragePool, node: str,
                     image: BaseImage, domain_type: str, public_line: str) -> None:
        dom_name = names.domain_name(self.lab, node)
        disk_name, seed_name = f"{node}.qcow2", f"{node}-seed.iso"
        if self._volume(pool, disk_name) is None:
            capacity = max(self.settings.disk_gib << 30, _virtual_size(image))
            pool.createXML(xml.overlay_volume_xml(disk_name, capacity, image.disk,
                                                  image.format), 0)
        if self._volume(pool, seed_name) is None:
            keys = host_keys(self.harness_dir, node)
            data = seed_iso(SeedSpec(
                hostname=node, user=self.settings.user, authorized_key=public_line,
                host_key_type=_cloud_init_key_type(keys.key_type),
                host_private_pem=keys.private_pem, host_public_line=keys.public_line,
                instance_prefix=dom_name))
            vol = pool.createXML(xml.raw_volume_xml(seed_name, len(data)), 0)
            self._upload(conn, vol, data)
        try:
            dom = conn.lookupByName(dom_name)
        except libvirt.libvirtError:
            spec = xml.DomainSpec(
                name=dom_name, tag=xml.LabTag(self.lab, "node", node),
                memory_mib=self.settings.memory_mib, vcpus=self.settings.vcpus,
                domain_type=domain_type, disk_pool=self.pool_name, disk_volume=disk_name,
                seed_volume=seed_name, network=self.network_name,
                mac=names.mac_address(self.lab, node), console_log=str(self.console_log(node)),
                kernel=str(image.kernel or ""), initrd=str(image.initrd or ""),
                cmdline=image.cmdline, cpu_shares=self._cpu_shares(node))
            try:
                dom = conn.defineXML(xml.domain_xml(spec))
            except libvirt.libvirtError as e:
                raise LabError(f"cannot define VM {dom_name}: {e.get_error_message()}",
                               where=node) from None
        else:
            tag = xml.read_tag(dom.XMLDesc(0))
            if tag is None or tag.lab != self.lab:
                raise LabError(f"a domain named {dom_name} exists but was not made by this lab",
                               where=node, hint="remove it or rename the lab")
        if not dom.isActive():
            try:
                dom.create()
            except libvirt.libvirtError as e:
                raise LabError(f"cannot start VM {dom_name}: {e.get_error_message()}",
                               where=node, output=self.console_tail(node)) from None

    def _upload(self, conn: libvirt.virConnect, vol: libvirt.virStorageVol, data: bytes) -> None:
        """Through libvirt (works on remote hosts, keeps ownership right); drivers without
        upload (the test driver) get the file written in place, which needs a local pool."""
        try:
            stream = conn.newStream(0)
            vol.upload(stream, 0, len(data), 0)
        except libvirt.libvirtError as e:
            if _err_code(e) != libvirt.VIR_ERR_NO_SUPPORT or not self.is_local:
                raise
            path = Path(vol.path())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        try:
            view = memoryview(data)
            while view:
                sent = stream.send(bytes(view[:1 << 20]))
                view = view[sent:]
            stream.finish()
        except libvirt.libvirtError:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    # -- waiting for SSH -------------------------------------------------------------------------
    def _wait_for_ssh(self, nodes: list[SshNode]) -> None:
        deadline = time.monotonic() + self.settings.boot_timeout
        domains = self._lab_domains()
        _parallel(nodes, lambda n: self._wait_one(n, domains[n.name], deadline))

    def _wait_one(self, node: SshNode, dom: libvirt.virDomain, deadline: float) -> None:
        last = ""
        while True:
            if not dom.isActive():
                raise LabError(f"VM {dom.name()} stopped while booting", where=node.name,
                               output=self.console_tail(node.name),
                               hint=f"full console log: {self.console_log(node.name)}")
            if _port_open(node.address, SSH_PORT, timeout=2):
                try:
                    node.wait_for_ssh(timeout=max(5.0, min(20.0, deadline - time.monotonic())),
                                      interval=2)
                    return
                except HostKeyMismatch:
                    raise         # retrying cannot fix a wrong key
                except LabError as e:
                    last = e.describe()
            if time.monotonic() >= deadline:
                console = self.console_tail(node.name)
                raise LabError(
                    f"node {node.name} did not answer SSH at {node.address} within "
                    f"{self.settings.boot_timeout:.0f} s",
                    where=node.name,
                    output=(f"last SSH error: {last}\n" if last else "")
                    + "--- serial console (tail) ---\n" + console,
                    hint=f"full console log: {self.console_log(node.name)}; raise [libvirt] "
                         "boot_timeout if the machine is just slow (TCG)")
            time.sleep(2)

    def console_tail(self, node: str, lines: int = CONSOLE_TAIL_LINES) -> str:
        path = self.console_log(node)
        try:
            text = path.read_text(errors="replace")
        except OSError as e:
            return f"(no console log at {path}: {e.strerror})"
        tail = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()][-lines:]
        return "\n".join(tail) if tail else "(console log is empty)"

    # -- destroy ---------------------------------------------------------------------------------
    def destroy(self) -> None:
        """Removes the lab's domains, volumes, pool, network and console logs, and libvirt's
        leftover firewall chains once no libvirt network runs any more. Safe to repeat."""
        conn = self.conn()
        domains = self._lab_domains()

        def remove_domain(item: tuple[str, libvirt.virDomain]) -> None:
            node, dom = item
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            try:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            except libvirt.libvirtError as e:
                if _err_code(e) != libvirt.VIR_ERR_NO_DOMAIN:
                    raise LabError(f"cannot remove VM {dom.name()}: {e.get_error_message()}",
                                   where=node) from None

        _parallel(domains.items(), remove_domain)
        for node in {*self.node_names, *domains} if self.is_local else ():
            for log in (self.console_log(node), self.qemu_log(node)):
                with contextlib.suppress(FileNotFoundError):
                    log.unlink()
        self._remove_pool()
        ip_forward_before = ""
        networks = self._lab_networks()
        for net in networks:
            ip_forward_before = _ip_forward_before(net.XMLDesc(0)) or ip_forward_before
            with contextlib.suppress(libvirt.libvirtError):
                if net.isActive():
                    net.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                net.undefine()
        # Only after removing a network of ours: libvirt state we did not touch stays as is.
        if networks and self.is_local and not self.is_test_driver:
            self._tidy_host(conn, ip_forward_before)

    def _remove_pool(self) -> None:
        pool = self._lab_pool()
        if pool is not None:
            if not pool.isActive():
                with contextlib.suppress(libvirt.libvirtError):
                    pool.create(0)
            if pool.isActive():
                with contextlib.suppress(libvirt.libvirtError):
                    pool.refresh(0)
                for vol in pool.listAllVolumes(0):
                    with contextlib.suppress(libvirt.libvirtError):
                        vol.delete(0)
                with contextlib.suppress(libvirt.libvirtError):
                    pool.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                pool.delete(0)      # removes the (now empty) directory
            with contextlib.suppress(libvirt.libvirtError):
                pool.undefine()
        # A provision interrupted between making the directory and defining the pool.
        if self.is_local and self.pool_path.is_dir():
            shutil.rmtree(self.pool_path, ignore_errors=True)

    def _tidy_host(self, conn: libvirt.virConnect, ip_forward_before: str) -> None:
        try:
            active = [n for n in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)]
        except libvirt.libvirtError:
            return
        if active:
            return        # another network still needs libvirt's chains and forwarding
        removed = firewall.remove_libvirt_chains()
        if removed:
            self.report(f"removed {len(removed)} leftover libvirt firewall rules/chains")
        if ip_forward_before == "0":
            firewall.restore_ip_forward("0")

    # -- logs ------------------------------------------------------------------------------------
    def collect_logs(self, dest: Path) -> None:
        domains = self._lab_domains()
        for node, dom in domains.items():
            out = Path(dest) / node
            out.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(libvirt.libvirtError):
                (out / "domain.xml").write_text(dom.XMLDesc(0))
            with contextlib.suppress(OSError):
                shutil.copyfile(self.console_log(node), out / "console.log")
            with contextlib.suppress(OSError):
                shutil.copyfile(self.qemu_log(node), out / "qemu.log")
        nets = self._lab_networks()
        if nets:
            Path(dest).mkdir(parents=True, exist_ok=True)
            (Path(dest) / "network.xml").write_text(nets[0].XMLDesc(0))
        for ssh_node in self.nodes():
            if not isinstance(ssh_node, SshNode) or not _port_open(ssh_node.address, SSH_PORT, 2):
                continue
            with contextlib.suppress(LabError):
                res = ssh_node.run(["journalctl", "-b", "--no-pager", "-n", "2000"], timeout=30)
                (Path(dest) / ssh_node.name / "journal.txt").write_text(res.stdout + res.stderr)
            ssh_node.close()


def _ip_forward_before(network_xml: str) -> str:
    tag = xml.read_tag(network_xml)
    return tag.ip_forward_before if tag else ""


def _cloud_init_key_type(ssh_key_type: str) -> str:
    """"ssh-ed25519" -> "ed25519", "ecdsa-sha2-nistp256" -> "ecdsa" (cloud-init's ssh_keys)."""
    if ssh_key_type.startswith("ecdsa-"):
        return "ecdsa"
    return ssh_key_type.removeprefix("ssh-")


def _virtual_size(image: BaseImage) -> int:
    """The base image's virtual size: an overlay may not be smaller than its backing file."""
    if image.format == "raw":
        return image.disk.stat().st_size
    with image.disk.open("rb") as f:
        header = f.read(32)
    return int.from_bytes(header[24:32], "big") if len(header) == 32 else 0


def _port_open(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
