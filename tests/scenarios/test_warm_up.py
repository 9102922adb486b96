"""The suites' warm-up: what a plugin sets up once per node (peer routes, a VTEP) is made
by a warm-up pod before the first scenario, so no scenario's pod is blamed for it. A node
whose warm-up pod failed (a starved API server on emulated VMs did that to a 3-VM lab on
2026-12-07) is warmed again before its first scenario pod."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_broken_kit import HEALTHY, KIT, ROOT, _judge, _need_plugin_build

pytestmark = [pytest.mark.root, pytest.mark.slow]
FLAKY = Path(__file__).resolve().parent / "flaky" / "cnilab-first-add-per-node-fails"


def test_a_node_whose_warm_up_failed_is_warmed_before_its_first_scenario_pod(tmp_path):
    _need_plugin_build()
    marks = tmp_path / "marks"
    marks.mkdir()
    plugin = tmp_path / "flaky-cnilab"
    plugin.write_text(FLAKY.read_text().replace("@KIT@", str(KIT)).replace("@REPO@", str(ROOT))
                      .replace("@MARKS@", str(marks)))
    plugin.chmod(0o755)
    verdict = _judge("cnilab-first-add-fails", str(plugin), [HEALTHY], tmp_path)
    assert len(list(marks.iterdir())) == 2, "the warm-up ADD did not fail on both nodes"
    assert verdict.outcomes.get(HEALTHY) == "passed", verdict.output[-3000:]
    assert "left by pod" not in verdict.output, verdict.output[-3000:]
