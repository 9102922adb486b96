"""`lab image build|list|path|pod|node`: VM base images (libvirt provider), pod images (K3s),
the container nodes' image (podman provider).

    lab image build [--force]     a Debian 12 VM image from Debian packages (mmdebstrap), cached
    lab image list                what the image cache holds
    lab image path [IMAGE]        where an image is (built, downloaded, or --fetch it now)
    lab image pod [-o DIR]        the scenario pod image and a pause image as tarballs for
                                  k3s.images (air-gapped clusters import them at start)
    lab image multus --from DIR   the Multus daemonset image around binaries built from source
    lab image node [--force]      the podman provider's node image, into the lab's podman
                                  storage ([podman] storage_dir)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lab.api import LabError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "image", help="build, list and locate VM base images; build pod images",
        description="VM base images for the libvirt provider, pod images for K3s labs.")
    p.add_argument("--cache", type=Path, default=None,
                   help="image cache (default: /var/cache/cnilab/images as root, "
                        "else ~/.cache/cnilab/images)")
    subcommands = p.add_subparsers(dest="image_command", metavar="SUBCOMMAND", required=True)
    # -c/--name after the action too (`lab image list -c X`), as after every subcommand
    common = [subparsers.common] if hasattr(subparsers, "common") else []
    build = subcommands.add_parser("build", parents=common,
                               help="build the Debian 12 image (mmdebstrap, ~1.5-3 min)")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.add_argument("--mirror", default=None,
                       help="Debian mirror (default: the one apt on this machine uses)")
    listing = subcommands.add_parser("list", parents=common, help="list cached images")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    pod = subcommands.add_parser(
        "pod", parents=common,
        help="build the scenario pod image + a pause image as tarballs (K3s air-gap)",
        description="Builds localhost/cnilab/pod (ip, ping, iperf3, python3) and "
                    "localhost/cnilab/pause from Debian packages and saves them as "
                    "docker-archive tarballs K3s imports: put them in the airgap folder.")
    pod.add_argument("-o", "--output", type=Path, default=None,
                     help="folder for cnilab-pod.tar and cnilab-pause.tar (default: "
                          "/var/cache/cnilab/pod-images as root)")
    pod.add_argument("--force", action="store_true", help="rebuild even if current")
    pod.add_argument("--mirror", default=None,
                     help="Debian mirror (default: the one apt on this machine uses)")
    multus = subcommands.add_parser(
        "multus", parents=common,
        help="build the Multus daemonset image from Multus binaries (K3s air-gap)",
        description="Builds the Multus daemonset image (thick: multus-daemon, multus-shim, "
                    "install_multus; thin: multus, thin_entrypoint, install_multus) from "
                    "Debian packages around binaries built from Multus's source, named as "
                    "upstream's image so the daemonset finds it without a pull; saved as a "
                    "tarball for the airgap folder.")
    multus.add_argument("--from", dest="binaries", type=Path, required=True, metavar="DIR",
                        help="folder holding the Multus binaries (hack/build-go.sh's bin/)")
    multus.add_argument("--version", default=None,
                        help="Multus release the binaries are (default: [multus] version of "
                             "the config, else the default release)")
    multus.add_argument("--flavor", choices=("thick", "thin"), default=None,
                        help="image flavor (default: [multus] flavor of the config, else thick)")
    multus.add_argument("-o", "--output", type=Path, default=None,
                        help="folder for the tarball (default: /var/cache/cnilab/pod-images "
                             "as root)")
    multus.add_argument("--force", action="store_true", help="rebuild even if current")
    multus.add_argument("--mirror", default=None,
                        help="Debian mirror (default: the one apt on this machine uses)")
    node = subcommands.add_parser(
        "node", parents=common,
        help="build the container node image (podman provider; mmdebstrap, ~3-5 min)",
        description="Builds localhost/cnilab/node from Debian packages into the podman "
                    "storage of the config's [podman] section (default "
                    "/var/lib/cnilab-podman): what `lab up` starts container nodes from.")
    node.add_argument("--force", action="store_true", help="rebuild even if current")
    node.add_argument("--mirror", default=None,
                      help="Debian mirror (default: the one apt on this machine uses)")
    path = subcommands.add_parser("path", parents=common, help="print the local path of an image")
    path.add_argument("image", nargs="?", default=None,
                      help="image name, path or URL (default: the config's [libvirt] image, "
                           "else cnilab-debian-12)")
    path.add_argument("--fetch", action="store_true",
                      help="download a catalog image (or build cnilab-debian-12) if missing")
    return p


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _config_if_any(args: argparse.Namespace) -> Any:
    """The lab config when -c names an existing file (image commands need none), else None."""
    config_path = getattr(args, "config", None)
    if config_path is None or not Path(config_path).is_file():
        return None
    from lab.cli._common import config_from

    return config_from(args)


def _configured_image(args: argparse.Namespace) -> str:
    config = _config_if_any(args)
    if config is not None and config.libvirt is not None:
        return str(config.libvirt.image)
    from lab.nodes.providers.libvirt.image_build import BUILT_IMAGE_NAME

    return BUILT_IMAGE_NAME


def _build_multus(args: argparse.Namespace) -> int:
    from lab.config.k3s import MULTUS_DEFAULT_VERSION, MultusSettings
    from lab.kube.pod_images import build_pod_images, multus_image

    config = _config_if_any(args)
    configured = (config.multus if config is not None else None) or MultusSettings()
    version = args.version or configured.version or MULTUS_DEFAULT_VERSION
    image = multus_image(args.binaries, version, args.flavor or configured.flavor)
    for built, path, _seconds in build_pod_images(args.output, mirror=args.mirror,
                                                  force=args.force, report=_say,
                                                  images=(image,)):
        print(f"{built.ref}\t{path}")
    return 0


def _node_image(args: argparse.Namespace) -> int:
    from lab.config.podman import PodmanSettings
    from lab.nodes.providers.podman.cmdlines import Storage
    from lab.nodes.providers.podman.image import build_node_image

    config = _config_if_any(args)
    settings = (config.podman if config is not None else None) or PodmanSettings()
    storage = Storage(settings.storage_dir, settings.runtime, settings.cgroup_manager)
    ref, seconds = build_node_image(storage, mirror=args.mirror, force=args.force, report=_say)
    print(f"{ref}" + (f" (built in {seconds:.0f} s)" if seconds is not None else " (current)"))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.image_command == "node":
        return _node_image(args)
    from lab.nodes.providers.libvirt import image_build, images

    if args.image_command == "pod":
        from lab.kube.pod_images import build_pod_images

        for pod_image, path, _seconds in build_pod_images(args.output, mirror=args.mirror,
                                                      force=args.force, report=_say):
            print(f"{pod_image.ref}\t{path}")
        return 0
    if args.image_command == "multus":
        return _build_multus(args)
    cache: Path = args.cache or image_build.default_cache_dir()
    if args.image_command == "build":
        built, seconds = image_build.build_image(cache, mirror=args.mirror, force=args.force,
                                                 report=_say)
        took = f" (built in {seconds:.0f} s)" if seconds is not None else " (cached)"
        print(f"{built.directory}{took}")
        return 0
    if args.image_command == "list":
        found = images.cached_images(cache)
        if args.json:
            print(json.dumps([{"name": name, "path": str(path)} for name, path in found],
                             indent=2))
            return 0
        if not found:
            print(f"no images in {cache}; `lab image build` makes one", file=sys.stderr)
            return 0
        for name, path in found:
            print(f"{name}\t{path}")
        return 0
    spec = args.image or _configured_image(args)
    if not args.fetch and spec in images.CATALOG:
        local = cache / images.CATALOG[spec].url.rsplit("/", 1)[-1]
        if not local.is_file():
            raise LabError(f"image {spec!r} is not downloaded yet (looked in {cache})",
                           hint=f"`lab image path {spec} --fetch` downloads it")
    image = images.resolve_image(spec, cache, build_if_missing=args.fetch, report=_say)
    print(image.disk)
    return 0
