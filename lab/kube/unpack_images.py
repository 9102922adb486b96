"""The air-gapped pod images unpacked on every node during `lab up` (a K3s step)."""
from __future__ import annotations

import time

from lab.api import ActionContext, LabError, Node
from lab.kube import cmdlines
from lab.kube.airgap import pod_image_of, resolve_inputs
from lab.kube.k3s_install import k3s_settings
from lab.kube.paths import parse_snapshotter, read_containerd_config
from lab.kube.remote import POLL, parallel, wait_until

NO_IMAGE_HINT = ("its tarball must be in the air-gap folder or k3s.images (`lab image pod -o "
                 "<folder>` makes it)")


class UnpackPodImages:
    """Air-gapped images arrive as tarballs that K3s imports but does not unpack: the first pod
    on each node then waits for the unpack (60-190 s for the scenario image under TCG). Done
    here, on every node at once, the first scenario pod starts as fast as the next.

    K3s imports the tarballs beside the kubelet's start, not before it: on a slow node (TCG)
    it is Ready well before a 140 MB image is in. An image not there while the node holds
    tarballs is waited for, to the K3s deadline; with no tarball at all it never comes."""
    name = "unpack the pod images on every node"

    def __init__(self, poll: float = POLL) -> None:
        self.poll = poll

    def run(self, ctx: ActionContext) -> None:
        settings = k3s_settings(ctx)
        pod_image, policy = pod_image_of(ctx.config)
        # ref -> whether it must be there already: a pod image that may be pulled (from a
        # registry mirror the nodes reach) is pulled, and unpacked, at its first use.
        refs = {pod_image: policy == "Never"}
        pause = resolve_inputs(ctx.config).pause_image
        if pause:   # set only when its tarball is among the inputs
            refs = {pause: True, **refs}
        skipped: set[str] = set()

        def unpack(node: Node, snapshotter: str, ref: str, required: bool) -> None:
            deadline = time.monotonic() + settings.ready_timeout
            said: list[str] = []
            tarballs: list[bool] = []   # whether the node holds any: asked at the first miss

            def unpacked() -> str | None:
                res = node.run(["sh", "-c", cmdlines.unpack_image(ref, snapshotter)],
                               timeout=max(deadline - time.monotonic(), 5.0))
                if res.rc == 3 and not required:
                    skipped.add(ref)
                elif res.rc == 3:
                    said[:] = [res.stderr.strip()]
                    if not tarballs:
                        tarballs.append(node.run(["sh", "-c", cmdlines.has_image_tarballs()]).ok)
                    if not tarballs[0]:
                        raise LabError(f"image {ref} is not on {node.name}", where=node.name,
                                       output=said[0], hint=NO_IMAGE_HINT)
                    return f"{ref} not imported yet"
                elif not res.ok:
                    raise LabError(f"cannot unpack {ref}", where=node.name,
                                   output=(res.stderr or res.stdout).strip())
                return None

            def late(missing: str) -> LabError:
                return LabError(
                    f"image {ref} is not on {node.name}: K3s had not imported it from "
                    f"{cmdlines.IMAGES_DIR} after {settings.ready_timeout:.0f}s",
                    where=node.name, output="\n".join([missing, *said]),
                    hint=NO_IMAGE_HINT + "; K3s says why in its log (`lab logs`)")

            wait_until(unpacked, settings.ready_timeout, late, self.poll)

        def unpack_all(node: Node) -> None:
            snapshotter = parse_snapshotter(read_containerd_config(node) or "")
            for ref, required in refs.items():
                unpack(node, snapshotter, ref, required)

        parallel(ctx.nodes, unpack_all)
        if ctx.report:
            done = [ref for ref in refs if ref not in skipped]
            ctx.report(f"{', '.join(done) or 'nothing'} unpacked on {len(ctx.nodes)} nodes"
                       + (f"; {', '.join(sorted(skipped))} not imported: pulled at first use"
                          if skipped else ""))
