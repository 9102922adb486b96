"""The end-of-run summary: the connectivity matrix per family (text and HTML), the scenario
groups, a failed cell with its diagnosis, and names and messages escaped in the HTML."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from lab.drivers.probe_record import Endpoint, ProbeRecorder, group_of, one_line
from lab.drivers.run_summary import matrix, matrix_text, summary_html, summary_text

A = Endpoint("a-1f", "node1")
B = Endpoint("b-1f", "node2")
C = Endpoint("c-1f", "node1")
NODE1 = Endpoint("node1", "node1", is_pod=False)


def _recorder() -> ProbeRecorder:
    """node1's pods a and c reach each other; a and b (node2) do not over IPv4; IPv6 passes."""
    rec = ProbeRecorder(scenario="scenarios/test_same_node.py::test_icmp[v4]")
    for src, dst in ((A, C), (C, A)):
        rec.record(src, dst, 4, "icmp", True)
        rec.record(src, dst, 4, "tcp", True)
    rec.scenario = "scenarios/test_cross_node.py::test_icmp[v4]"
    rec.record(A, B, 4, "icmp", False, "diagnosis: node1 has no route to node2's pod subnet "
                                       "10.244.1.0/24\n  [node1] ip route get …")
    rec.record(A, B, 4, "tcp", False, "diagnosis: node1 has no route to node2's pod subnet "
                                      "10.244.1.0/24")
    rec.record(B, A, 4, "icmp", True)
    rec.record(NODE1, B, 4, "icmp", False, "")
    rec.record(A, B, 6, "icmp", True)
    rec.record(B, A, 6, "icmp", True)
    rec.outcome("scenarios/test_same_node.py::test_icmp[v4]", "passed")
    rec.outcome("scenarios/test_cross_node.py::test_icmp[v4]", "failed", "a -> b: no reply")
    rec.outcome("scenarios/test_cross_node.py::test_mesh[v4]", "skipped")
    rec.outcome("scenarios/test_leak_audit.py::test_leaks", "passed")
    rec.outcome("scenarios/test_leak_audit.py::test_leaks", "failed", "leaked link x")
    return rec


def _row(lines: list[str], label: str) -> list[str]:
    """The marks of the matrix row whose label ends with `label`."""
    line = next(li for li in lines if re.match(rf"\s*\d*\s+{re.escape(label)}\s", li))
    return line[line.index(label) + len(label):].split()


def test_the_text_matrix_marks_each_pair_and_says_why_a_cell_failed():
    grid = matrix(_recorder().probes, 4)
    assert [e.label for e in grid.rows] == ["a-1f@node1", "c-1f@node1", "b-1f@node2", "node1"]
    assert [e.label for e in grid.columns] == ["a-1f@node1", "c-1f@node1", "b-1f@node2"]
    lines = matrix_text(grid)
    assert lines[0].split() == ["IPv4", "1", "2", "3"]
    assert _row(lines, "a-1f@node1") == ["·", "✓", "✗"]
    assert _row(lines, "b-1f@node2") == ["✓", "·", "·"]
    assert _row(lines, "node1 (node)") == ["·", "·", "✗"]
    # one line per failed pair: its kinds and the diagnosis's first line, untagged
    assert ("  ✗ a-1f@node1 → b-1f@node2 (icmp, tcp): node1 has no route to node2's pod "
            "subnet 10.244.1.0/24") in lines
    assert "  ✗ node1 → b-1f@node2 (icmp): no diagnosis" in lines


def test_each_family_has_its_own_matrix_and_the_groups_their_counts():
    lines = summary_text(_recorder())
    v4, v6 = lines.index(next(li for li in lines if li.startswith("IPv4"))), \
        lines.index(next(li for li in lines if li.startswith("IPv6")))
    assert v4 < v6
    assert _row(lines[v6:], "a-1f@node1") == ["·", "✓"]
    assert lines[-4].split() == ["scenario", "groups", "passed", "failed", "skipped"]
    assert lines[-3].split() == ["✓", "same-node", "1", "0", "0"]
    assert lines[-2].split() == ["✗", "cross-node", "0", "1", "1"]
    assert lines[-1].split() == ["✗", "leaks", "0", "1", "0"]   # a teardown failure counts


def test_a_terminal_without_utf8_gets_plain_ascii():
    text = "\n".join(summary_text(_recorder(), unicode=False))
    text.encode("ascii")
    assert "X a-1f@node1 -> b-1f@node2 (icmp, tcp)" in text
    assert _row(text.splitlines(), "a-1f@node1") == [".", "+", "X"]


def test_a_3_node_lab_fits_a_screen():
    rec = ProbeRecorder()
    pods = [Endpoint(f"on-node{i}-77aa", f"node{i}") for i in (1, 2, 3)] + \
        [Endpoint(f"{n}-3f2a", "node1") for n in ("left", "right")] + \
        [Endpoint(f"burst-{i}-9c1d", "node1") for i in range(8)]
    nodes = [Endpoint(f"node{i}", f"node{i}", is_pod=False) for i in (1, 2, 3)]
    for family in (4, 6):
        for src in pods[:5] + nodes:
            for dst in pods:
                if src != dst:
                    rec.record(src, dst, family, "icmp", src.node == dst.node, "no route")
    for i in range(12):
        rec.outcome(f"scenarios/test_cross_node.py::t{i}", "failed")
    lines = summary_text(rec)
    assert max(len(li) for li in lines) <= 100
    assert len(lines) <= 45
    # the pods only probed (never probing) are no row: a legend names their columns
    assert any(li.startswith("  to: 6 burst-0-9c1d@node1  7 burst-1-9c1d@node1") for li in lines)
    assert sum("13 burst-7-9c1d@node1" in li for li in lines) == 2      # v4 and v6


def test_the_html_report_is_self_contained_and_escapes_untrusted_text():
    rec = _recorder()
    evil = Endpoint('<img src=x onerror="alert(1)">', "node1")
    rec.record(evil, B, 4, "icmp", False, "diagnosis: <script>alert(2)</script> & more")
    rec.outcome("scenarios/test_same_node.py::test_x[<b>]", "failed", "</pre><script>x</script>")
    page = summary_html(rec, title="lab <t>")
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;@node1" in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt; &amp; more" in page
    assert "&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;" in page
    assert "<title>cnilab scenarios" not in page and "lab &lt;t&gt;" in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page), "an external asset"
    assert "<style>" in page and "<link" not in page


def test_the_html_report_shows_the_cells_groups_and_failures():
    page = summary_html(_recorder())
    assert "<h2>IPv4</h2>" in page and "<h2>IPv6</h2>" in page
    v4 = page[page.index("<h2>IPv4</h2>"):page.index("<h2>IPv6</h2>")]
    row = re.search(r'<tr><td class="label">a-1f@node1</td>(.*?)</tr>', v4)
    assert row is not None
    assert re.findall(r'<td class="(\w+)"', row.group(1)) == ["none", "pass", "fail"]
    assert "icmp failed: node1 has no route to node2&#x27;s pod subnet" in row.group(1)
    assert '<td class="label">cross-node</td><td class="num">0</td>' in page
    assert "scenarios/test_cross_node.py::test_icmp[v4]</h3>\n<pre>a -&gt; b: no reply" in page


def test_probes_from_many_threads_are_all_kept():
    rec = ProbeRecorder()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: rec.record(A, B, 4, "icmp", True), range(400)))
    assert len(rec.probes) == 400


def test_groups_and_one_line_diagnoses():
    assert group_of("scenarios/test_cni_lifecycle.py::test_x[v6]") == "lifecycle"
    assert group_of("cnilab_scenarios/test_add_results.py::t") == "results"
    assert group_of("tests/test_my_own_checks.py::t") == "my-own-checks"
    assert one_line("\ndiagnosis: pod a has no route\n  evidence") == "pod a has no route"


def test_the_matrix_shows_a_suite_pod_by_its_role_on_its_node():
    from types import SimpleNamespace

    from scenarios.support import endpoint

    pod = SimpleNamespace(name="on-node2-77aa", node="node2")
    node = SimpleNamespace(name="node2", address="10.99.0.12")
    assert endpoint(pod) == Endpoint("on-node2", "node2")           # type: ignore[arg-type]
    assert endpoint(SimpleNamespace(name="web", node="node1")).label == "web@node1"  # type: ignore[arg-type]
    assert endpoint(node) == Endpoint("node2", "node2", is_pod=False)  # type: ignore[arg-type]


def test_the_terminal_stream_decides_between_marks_and_ascii():
    import io
    from types import SimpleNamespace

    from lab.drivers.pytest_plugin import _terminal_speaks_utf8

    def reporter(encoding: str) -> object:
        stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
        return SimpleNamespace(_tw=SimpleNamespace(_file=stream))

    assert _terminal_speaks_utf8(reporter("utf-8"))
    assert not _terminal_speaks_utf8(reporter("ascii"))
    assert not _terminal_speaks_utf8(reporter("latin-1"))
