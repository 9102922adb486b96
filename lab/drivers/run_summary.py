"""The summary of a suite run a person takes in at a glance: a connectivity matrix per family
(rows: from, columns: to; pods labelled with their node) and a line per scenario group, as
terminal text (UTF-8 marks, or plain ASCII) and as one self-contained HTML page (inline CSS,
no external assets; every name and message escaped: pod names and messages are untrusted).
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timezone

from .probe_record import Endpoint, Probe, ProbeRecorder, endpoints

MARKS = {True: {"pass": "✓", "fail": "✗", "none": "·", "to": "→"},
         False: {"pass": "+", "fail": "X", "none": ".", "to": "->"}}
FAILED_LINES = 6          # per family in the terminal; the HTML report lists them all


@dataclass(frozen=True)
class Matrix:
    """One family's probes as a grid: every (source, destination) pair probed and how."""

    family: int
    rows: list[Endpoint]
    columns: list[Endpoint]
    cells: dict[tuple[Endpoint, Endpoint], list[Probe]]

    def state(self, source: Endpoint, destination: Endpoint) -> str:
        """"pass" when every probe of the pair passed, "fail" when one failed, else "none"."""
        probes = self.cells.get((source, destination), [])
        if not probes:
            return "none"
        return "pass" if all(p.passed for p in probes) else "fail"

    def failed(self) -> list[tuple[Endpoint, Endpoint, list[str], str]]:
        """Each failed pair: its failed kinds and the first diagnosis given."""
        found = []
        for (source, destination), probes in self.cells.items():
            bad = [p for p in probes if not p.passed]
            if bad:
                kinds = list(dict.fromkeys(p.kind for p in bad))
                why = next((p.diagnosis for p in bad if p.diagnosis), "no diagnosis")
                found.append((source, destination, kinds, why))
        return sorted(found, key=lambda f: (self.rows.index(f[0]), self.columns.index(f[1])))


def matrix(probes: list[Probe], family: int) -> Matrix:
    mine = [p for p in probes if p.family == family]
    rows, columns = endpoints(mine)
    cells: dict[tuple[Endpoint, Endpoint], list[Probe]] = {}
    for probe in mine:
        cells.setdefault((probe.source, probe.destination), []).append(probe)
    return Matrix(family, rows, columns, cells)


# -- terminal -----------------------------------------------------------------------------------
def matrix_text(grid: Matrix, *, unicode: bool = True) -> list[str]:
    """The grid with numbered columns; a row that is also a column carries its number."""
    marks = MARKS[unicode]
    number = {end: i + 1 for i, end in enumerate(grid.columns)}
    width = len(str(len(grid.columns))) + 1
    labels = [f"{number[end]:>{width - 1}} {end.label}" if end in number
              else f"{'':>{width - 1}} {end.label}" + ("" if end.is_pod else " (node)")
              for end in grid.rows]
    pad = max(len(label) for label in labels) + 1
    lines = [f"IPv{grid.family}".ljust(pad)
             + "".join(f"{number[end]:>{width}}" for end in grid.columns)]
    for end, label in zip(grid.rows, labels):
        lines.append(label.ljust(pad) + "".join(
            f"{marks[grid.state(end, column)]:>{width}}" for column in grid.columns))
    lines += _legend([f"{number[end]} {end.label}" for end in grid.columns
                      if end not in grid.rows], pad + width * len(grid.columns))
    failed = grid.failed()
    for source, destination, kinds, why in failed[:FAILED_LINES]:
        lines.append(f"  {marks['fail']} {source.label} {marks['to']} {destination.label} "
                     f"({', '.join(kinds)}): {why}")
    if len(failed) > FAILED_LINES:
        lines.append(f"  {'…' if unicode else '...'} and {len(failed) - FAILED_LINES} more "
                     "failed pairs (the HTML report lists them all)")
    return lines


def _legend(entries: list[str], width: int) -> list[str]:
    """The columns no row names (pods only probed, never probing), as wrapped lines."""
    lines: list[str] = []
    for entry in entries:
        if lines and len(lines[-1]) + 2 + len(entry) <= max(width, 78):
            lines[-1] += "  " + entry
        else:
            lines.append(("  to: " if not lines else "      ") + entry)
    return lines


def groups_text(recorder: ProbeRecorder, *, unicode: bool = True) -> list[str]:
    marks = MARKS[unicode]
    groups = recorder.groups()
    if not groups:
        return []
    title = "scenario groups"
    pad = max(len(title), *(len(g) + 2 for g in groups)) + 1
    lines = [title.ljust(pad) + " passed  failed  skipped"]
    for group, tally in groups.items():
        mark = marks["fail"] if tally["failed"] else marks["pass"] if tally["passed"] \
            else marks["none"]
        lines.append(f"{mark} {group}".ljust(pad) + f"{tally['passed']:>7}{tally['failed']:>8}"
                     f"{tally['skipped']:>9}")
    return lines


def summary_text(recorder: ProbeRecorder, *, unicode: bool = True) -> list[str]:
    marks = MARKS[unicode]
    lines: list[str] = []
    families = recorder.families()
    if families:
        lines.append(f"connectivity ({marks['pass']} reached, {marks['fail']} not, "
                     f"{marks['none']} not probed; rows: from, columns: to)")
    for family in families:
        lines += matrix_text(matrix(recorder.probes, family), unicode=unicode)
    return lines + groups_text(recorder, unicode=unicode)


# -- HTML ---------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:center}
th.from,td.label{text-align:left;font-weight:normal;white-space:nowrap}
th.to{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap;font-weight:normal}
td.pass{background:#dff5df;color:#176317}td.fail{background:#fbdcdc;color:#a11;font-weight:bold}
td.none{color:#aaa}td.num{text-align:right}
pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def matrix_html(grid: Matrix) -> str:
    marks = MARKS[True]
    head = "".join(f'<th class="to">{_e(end.label)}</th>' for end in grid.columns)
    rows = []
    for end in grid.rows:
        cells = []
        for column in grid.columns:
            state = grid.state(end, column)
            title = "; ".join(
                f"{p.kind} {'passed' if p.passed else 'failed'}"
                + (f": {p.diagnosis}" if p.diagnosis else "")
                for p in grid.cells.get((end, column), []))
            cells.append(f'<td class="{state}" title="{_e(title)}">{marks[state]}</td>')
        label = end.label + ("" if end.is_pod else " (node)")
        rows.append(f'<tr><td class="label">{_e(label)}</td>{"".join(cells)}</tr>')
    failed = "".join(
        f"<tr><td class=\"label\">{_e(s.label)}</td><td class=\"label\">{_e(d.label)}</td>"
        f"<td>{_e(', '.join(kinds))}</td><td class=\"label\">{_e(why)}</td></tr>"
        for s, d, kinds, why in grid.failed())
    return (f"<h2>IPv{grid.family}</h2>\n<table><tr><th class=\"from\">from \\ to</th>{head}"
            f"</tr>\n" + "\n".join(rows) + "</table>\n"
            + (f"<table><tr><th>from</th><th>to</th><th>failed</th><th>diagnosis</th></tr>"
               f"{failed}</table>\n" if failed else ""))


def summary_html(recorder: ProbeRecorder, *, title: str = "cnilab scenarios") -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>\n<h1>{_e(title)}</h1>\n<p>{when}</p>"]
    if recorder.probes:
        parts.append("<p>connectivity: ✓ reached, ✗ not, · not probed (rows: from, columns: to;"
                     " hover a cell for each probe)</p>")
    parts += [matrix_html(matrix(recorder.probes, f)) for f in recorder.families()]
    groups = recorder.groups()
    if groups:
        parts.append("<h2>Scenario groups</h2>\n<table><tr><th class=\"from\">group</th>"
                     "<th>passed</th><th>failed</th><th>skipped</th></tr>" + "".join(
                         f"<tr><td class=\"label\">{_e(g)}</td><td class=\"num\">{t['passed']}"
                         f"</td><td class=\"num {'fail' if t['failed'] else ''}\">{t['failed']}"
                         f"</td><td class=\"num\">{t['skipped']}</td></tr>"
                         for g, t in groups.items()) + "</table>")
    failures = recorder.failures()
    if failures:
        parts.append("<h2>Failures</h2>")
        parts += [f"<h3>{_e(f.nodeid)}</h3>\n<pre>{_e(f.message)}</pre>" for f in failures]
    return "\n".join(parts) + "\n</body></html>\n"
