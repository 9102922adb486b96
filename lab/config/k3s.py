"""`[k3s]` and `[multus]` sections of lab.toml: which K3s and Multus, fed how, started with what.

A `[k3s]` section turns the lab's nodes into a K3s cluster; without it there is no Kubernetes.
`[multus]` adds Multus so the plugin under test is a secondary network (net1) in every pod; with
`k3s.primary = true` the plugin is the cluster network itself (flannel off) and Multus is optional.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The pinned release. Checksums are the `k3s` / `k3s-arm64` lines of the release's
# sha256sum-<arch>.txt, each seen in two independent public sources (a Bazel http_file pin and an
# Ansible role's table copied from upstream's sha256sum files). A version not listed here needs
# `sha256` in lab.toml: we never download a binary we cannot verify.
K3S_DEFAULT_VERSION = "v1.35.0+k3s1"
K3S_CHECKSUMS: dict[str, dict[str, str]] = {
    "v1.35.0+k3s1": {
        "amd64": "959c9310a6ab893958d1c95bc5d7609de9d7884630c8832180f059369b6dc331",
        "arm64": "c0b1673a1f2b740cb7bb08355c885efb6a4aa5c8022e5bb306c621c8c1492883",
    },
}
K3S_OLDEST_MINOR = 21      # issue 5: v1.21 to the newest
MULTUS_DEFAULT_VERSION = "v4.2.4"

# A release tag, or what K3s's own scripts/version.sh stamps on a build of an untagged commit
# (`<kubernetes version>+k3s-<commit[:8]>[-dirty]`): users who build K3s from source get that.
_K3S_VERSION = re.compile(r"^v1\.(\d+)\.(\d+)(?:-rc\d+)?\+k3s(?:\d+|-[0-9a-f]{8}(?:-dirty)?)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(?::\d+)?(?:/[A-Za-z0-9._~%/+\-]*)?")
# Flags the harness sets itself: a user copy would fight ours (and --token would print the secret
# into the unit file and `ps`).
_RESERVED_ARGS = ("--token", "--token-file", "--node-ip", "--node-name", "--server",
                  "--write-kubeconfig-mode",
                  "-t", "-s", "-i")      # K3s's short forms of --token, --server, --node-ip


def k3s_minor(version: str) -> int:
    """The Kubernetes minor of a K3s release tag ("v1.35.0+k3s1" -> 35)."""
    match = _K3S_VERSION.fullmatch(version)
    if not match:
        raise ValueError(f"{version!r} is not a K3s release tag like {K3S_DEFAULT_VERSION} "
                         "(or a source build's v1.28.4+k3s-71a3c35f)")
    return int(match.group(1))


class K3sSettings(BaseModel):
    """`[k3s]`: the pinned K3s release, how it reaches the nodes, and how it starts."""

    model_config = ConfigDict(extra="forbid")

    version: str = K3S_DEFAULT_VERSION
    mode: Literal["connected", "airgap"] = "connected"
    arch: Literal["amd64", "arm64"] = "amd64"
    # connected: checksum of the release binary, required for versions we have no pin for.
    sha256: str | None = None
    # connected, behind a corporate mirror: where <version>/k3s[-arm64] is downloaded from
    # instead of GitHub's release pages (the same layout); the checksum is still checked.
    download_base: str | None = None
    # connected: one registry mirror for every image the lab pulls (K3s's registries.yaml,
    # each registry the images name -> this endpoint), e.g. "http://10.99.0.1:5000".
    registry_mirror: str | None = None
    # airgap: one folder holding what the nodes need (lab.kube.airgap says what it looks for);
    # default $CNILAB_AIRGAP_DIR, else ./airgap. `binary` and `images` name files explicitly:
    # the k3s binary (copied to /usr/local/bin/k3s on each node) and image tarballs (copied to
    # /var/lib/rancher/k3s/agent/images/ before K3s starts).
    airgap_dir: Path | None = None
    binary: Path | None = None
    images: list[Path] = Field(default_factory=list)
    # Optional: the upstream install.sh; run with INSTALL_K3S_SKIP_DOWNLOAD=true. Without it the
    # harness writes the systemd unit itself (same flags, nothing fetched).
    install_script: Path | None = None
    server_args: list[str] = Field(default_factory=list)
    agent_args: list[str] = Field(default_factory=list)
    flannel_iface: str | None = None    # when the lab network is not the default route
    token_file: Path | None = None      # harness-side token (0600); default: <state_dir>/k3s-token
    cni_bin_dir: str | None = None      # override what the node's containerd config says
    cni_conf_dir: str | None = None
    primary: bool = False               # the plugin is the cluster network; flannel disabled
    # seconds for the API, the nodes, each pod: a last resort (a crash-looping unit or a pod
    # that will not start is reported at once), so it is sized for a starved TCG host
    ready_timeout: float = 600
    # Scenario pods need ip, ping, iperf3 and python3 (the TCP echo). Default: netshoot when
    # connected; air-gapped, the image `lab image pod` builds (its tarball in the airgap dir).
    pod_image: str | None = None
    pod_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    # The sandbox image (`--pause-image`). Default: K3s's own; air-gapped with the tarball
    # `lab image pod` writes, that image.
    pause_image: str | None = None
    namespace: str = "cnilab"           # scenario pods and the NetworkAttachmentDefinition
    # Where scenario probes (ping, iperf3, the TCP echo) run. "pod": in the pod's container,
    # through the API's exec, as kubectl exec does. "netns": in the pod's network namespace
    # from its node, over the lab's SSH: the same addresses, routes and interfaces, the node's
    # tools, none of the API server, kubelet and runc exec in the way (9-13 s per probe on a
    # starved 3-node TCG lab, 1.6-2.9 s this way).
    probe_exec: Literal["pod", "netns"] = "pod"

    @field_validator("version")
    @classmethod
    def _supported_version(cls, version: str) -> str:
        minor = k3s_minor(version)
        if minor < K3S_OLDEST_MINOR:
            raise ValueError(f"K3s {version} is older than v1.{K3S_OLDEST_MINOR}, the oldest "
                             "release the harness supports")
        return version

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, digest: str | None) -> str | None:
        if digest is not None and not _SHA256.fullmatch(digest.lower()):
            raise ValueError("must be 64 hex characters (the line for `k3s` in the release's "
                             "sha256sum-<arch>.txt)")
        return digest.lower() if digest else digest

    @field_validator("download_base", "registry_mirror")
    @classmethod
    def _plain_url(cls, url: str | None) -> str | None:
        if url is not None and not _URL.fullmatch(url):
            raise ValueError(f"{url!r} is not an http(s) URL like http://10.99.0.1:5000 (no "
                             "spaces, quotes or shell characters)")
        return url.rstrip("/") if url else url

    @field_validator("server_args", "agent_args")
    @classmethod
    def _no_reserved(cls, args: list[str]) -> list[str]:
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag in _RESERVED_ARGS:
                raise ValueError(f"{flag} is set by the harness (token from a 0600 file, node "
                                 "IP and name from the lab): remove it")
        return args

    @model_validator(mode="after")
    def _inputs_for_mode(self) -> K3sSettings:
        if self.mode == "connected" and self.expected_sha256 is None:
            raise ValueError(f"no pinned checksum for K3s {self.version} ({self.arch}): set "
                             "sha256 from the release's sha256sum-" + self.arch + ".txt, or "
                             f"use version = \"{K3S_DEFAULT_VERSION}\"")
        return self

    @property
    def expected_sha256(self) -> str | None:
        return self.sha256 or K3S_CHECKSUMS.get(self.version, {}).get(self.arch)

    @property
    def minor(self) -> int:
        return k3s_minor(self.version)


class MultusSettings(BaseModel):
    """`[multus]`: Multus in the cluster, as an upstream daemonset or placed on the hosts."""

    model_config = ConfigDict(extra="forbid")

    version: str = MULTUS_DEFAULT_VERSION
    mode: Literal["daemonset", "host"] = "daemonset"
    flavor: Literal["thick", "thin"] = "thick"     # daemonset mode only
    image: str | None = None        # default: upstream ghcr.io image of `version` (+ -thick)
    # host mode: the thin `multus` binary copied to each node (default: `multus` in the
    # k3s airgap dir)
    binary: Path | None = None
    # the daemonset's image pulled (190 MB thick) and a pod Ready on every node: on three TCG
    # guests of a 2-core host that outlasted 300 s; sized like [k3s] ready_timeout
    ready_timeout: float = 600

    @field_validator("version")
    @classmethod
    def _tag(cls, version: str) -> str:
        if not re.fullmatch(r"v\d+\.\d+\.\d+", version):
            raise ValueError(f"{version!r} is not a Multus release tag like "
                             f"{MULTUS_DEFAULT_VERSION}")
        return version

    @property
    def image_ref(self) -> str:
        suffix = "-thick" if self.flavor == "thick" else ""
        return self.image or f"ghcr.io/k8snetworkplumbingwg/multus-cni:{self.version}{suffix}"

    @property
    def max_cni_version(self) -> str:
        """The newest CNI spec this Multus hands to delegates: v4.0.x vendor libcni 1.1
        (spec 1.0.0), v4.1.0 on libcni 1.2 (spec 1.1.0)."""
        major, minor = (int(p) for p in self.version[1:].split(".")[:2])
        return "1.1.0" if (major, minor) >= (4, 1) else "1.0.0"


def runtime_max_cni_version(k3s_minor_version: int) -> str:
    """The newest CNI spec K3s's containerd reads in the conf dir: releases up to v1.23 ship
    containerd 1.4/1.5 with libcni 0.8 (spec 0.4.0); later ones libcni 1.x (1.0.0)."""
    return "0.4.0" if k3s_minor_version <= 23 else "1.0.0"


# Under software emulation (TCG) a node does everything several times slower: pulling and
# unpacking the thick image took 14-17 minutes on 3 TCG guests of a 2-core host (2026-12-07).
EMULATED_WAIT_FACTOR = 3


SettingsT = TypeVar("SettingsT", "K3sSettings", "MultusSettings")


def sized_for(settings: SettingsT, emulated: bool) -> SettingsT:
    """settings with ready_timeout stretched on emulated nodes, unless the user set it."""
    if not emulated or "ready_timeout" in settings.model_fields_set:
        return settings
    return settings.model_copy(
        update={"ready_timeout": settings.ready_timeout * EMULATED_WAIT_FACTOR})
