"""`lab up` on emulated nodes (libvirt under TCG): the actions are told, and the user sees why
the K3s and Multus waits are longer."""
from __future__ import annotations

import io

from lab.cluster import actions
from lab.config import parse_config
from lab.progress import Progress


class _EmulatedProvider:
    emulated = True

    def nodes(self):
        return []

    def provision(self):
        return []


def test_up_tells_the_actions_and_the_user_that_the_nodes_are_emulated(tmp_path, monkeypatch):
    config = parse_config({
        "lab": {"name": "tem1", "provider": "libvirt", "state_dir": str(tmp_path / "st")},
        "nodes": [{"name": "n1", "role": "server"}],
        "network": {"underlay": "192.168.240.0/24"},
        "plugin": {"path": "/bin/true"},
        "libvirt": {"image": "cnilab-debian-12"},
        "k3s": {"version": "v1.35.0+k3s1"},
    })
    seen = []

    class _Record:
        name = "record what the actions are told"

        def run(self, ctx):
            seen.append(ctx.emulated)

    monkeypatch.setattr(actions, "preflight", lambda _c: None)
    monkeypatch.setattr(actions, "build_actions", lambda _c, _r=None: [_Record()])
    out = io.StringIO()
    actions.up(config, Progress(out, interactive=False), provider=_EmulatedProvider())
    assert seen == [True]
    assert "the nodes are emulated (TCG): K3s and Multus waits the config does not size " \
           "are 3 times as long" in out.getvalue()
