"""The end-of-run summary from a real run: our plugin with its cross-node routes taken away
(the kit's cnilab-no-peer-routes) on a 2-node netns lab, judged by the traffic suites. The
terminal matrix and the HTML report beside the junit file must mark the same-node pairs
reached and the cross-node pairs not, with the diagnosis, and count the groups."""
from __future__ import annotations

import html
import os
import re
import secrets
import subprocess
import sys

import pytest
from test_broken_kit import _NETWORK, _NODES, LAB, PLUGIN, ROOT, _kit_plugin, _need_plugin_build

pytestmark = [pytest.mark.root]


def _cells(summary: str) -> dict[tuple[str, str], str]:
    """(from, to) -> the mark, read back from the terminal matrix (IPv4: the lab has no v6)."""
    lines = summary.splitlines()
    top = next(i for i, li in enumerate(lines) if li.startswith("IPv4"))
    rows = []
    for line in lines[top + 1:]:
        found = re.match(r"\s*(\d*)\s+(\S+(?: \(node\))?)\s+([✓✗·][ ✓✗·]*)$", line)
        if not found:
            break
        rows.append((found.group(1), found.group(2), found.group(3).split()))
    columns = {number: label for number, label, _ in rows if number}
    return {(label, columns[str(i + 1)]): mark
            for _, label, marks in rows for i, mark in enumerate(marks)}


def _html_row(page: str, label: str) -> list[str]:
    row = re.search(rf'<tr><td class="label">{re.escape(html.escape(label))}</td>(.*?)</tr>',
                    page)
    assert row is not None, f"no row {label} in the HTML report"
    return re.findall(r'<td class="(\w+)"', row.group(1))


def test_the_matrix_marks_same_node_reached_and_cross_node_not(tmp_path):
    _need_plugin_build()
    name = f"t4{secrets.token_hex(3)}"
    config = tmp_path / "lab.toml"
    config.write_text(f'[lab]\nname = "{name}"\n{_NODES}{_NETWORK}' + PLUGIN["cnilab"].replace(
        "{path}", _kit_plugin("cnilab-no-peer-routes", tmp_path)))
    common = ["-c", str(config), "--name", name]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}
    junit = tmp_path / "out" / "junit.xml"
    try:
        up = subprocess.run([*LAB, "up", *common], cwd=ROOT, capture_output=True, text=True,
                            timeout=180, env=env)
        assert up.returncode == 0, up.stderr[-2000:]
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
             "scenarios/test_same_node.py", "scenarios/test_cross_node.py",
             "--lab-config", str(config), "--lab-name", name, f"--junitxml={junit}",
             f"--lab-logs-dir={tmp_path / 'logs'}", "-q", "-o", "addopts=--strict-markers",
             "-k", "icmp or tcp or reaches"],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    finally:
        subprocess.run([*LAB, "down", *common], cwd=ROOT, capture_output=True, timeout=120,
                       env=env)
    out = suite.stdout
    summary = out[out.index("cnilab summary"):]
    cells = _cells(summary)
    assert cells[("left@node1", "right@node1")] == "✓", summary
    assert cells[("right@node1", "left@node1")] == "✓", summary
    assert cells[("on-node1@node1", "on-node2@node2")] == "✗", summary
    assert cells[("on-node2@node2", "on-node1@node1")] == "✗", summary
    assert cells[("node1 (node)", "on-node1@node1")] == "✓", summary
    assert cells[("node1 (node)", "on-node2@node2")] == "✗", summary
    assert cells[("node2 (node)", "on-node2@node2")] == "✓", summary
    assert cells[("left@node1", "on-node2@node2")] == "·", summary
    assert "✗ on-node1@node1 → on-node2@node2 (icmp, tcp): node1 has no route to" in summary
    groups = {line.split()[1]: line.split() for line in summary.splitlines()
              if line.split()[1:2] in (["same-node"], ["cross-node"])}
    assert groups["same-node"] == ["✓", "same-node", "3", "0", "0"], summary
    assert groups["cross-node"][:2] == ["✗", "cross-node"] and groups["cross-node"][3] != "0"
    report = junit.with_suffix(".html")
    assert f"HTML report: {report}" in summary
    page = report.read_text()
    columns = re.findall(r'<th class="to">([^<]*)</th>', page)
    for (src, dst), mark in cells.items():     # the page shows the same cells
        state = {"✓": "pass", "✗": "fail", "·": "none"}[mark]
        assert _html_row(page, src)[columns.index(html.escape(dst))] == state, (src, dst)
    assert "icmp failed: node1 has no route to" in page
    assert "test_cross_node_pod_to_pod_icmp_both_directions[v4]</h3>" in page
