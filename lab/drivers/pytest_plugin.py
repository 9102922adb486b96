"""cnilab as a pytest plugin (entry point pytest11 "cnilab"): scenarios against a running lab.

    pytest scenarios/ --lab-config lab.toml [--lab-name NAME] [--junitxml report.xml]

Fixtures: `lab` (the opened lab), `cluster` (pods on its nodes, attached to the network under
test), `nodes`, `node_host` (a testinfra host for a node) and `pod_factory` (makes pods and
deletes them after the test). When a test that used the lab fails, `lab logs` is collected
into a tarball whose path, with a short excerpt, lands in the report (and so in --junitxml).

At the end of a run that used the lab: the connectivity matrix and the scenario groups in the
terminal, and as a self-contained HTML page beside the --junitxml file (or at --lab-report);
the probes report to the run's ProbeRecorder (fixture `probe_recorder`).

Importing this module needs no lab: the options and fixtures only matter when a test asks.
"""
from __future__ import annotations

import contextlib
import re
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import pytest

from lab.api import AttachOptions, Cluster, LabError, Node, Pod
from lab.drivers.probe_record import ProbeRecorder
from lab.nodes.testinfra_netns import register as register_netns_backend
from lab.nodes.testinfra_nsenter import register as register_nsenter_backend

register_netns_backend()  # so node.testinfra_url = netns://… resolves in testinfra.get_host
register_nsenter_backend()  # and nsenter://PID (container nodes)

_LAB_KEY = pytest.StashKey[Any]()
_RECORDER = pytest.StashKey[ProbeRecorder]()
_REPORT = pytest.StashKey[Path]()             # the HTML report written
EXCERPT_COMMANDS = (["ip", "-br", "addr"], ["ip", "route"])


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cnilab", "cnilab scenarios against a lab")
    group.addoption("--lab-config", default="lab.toml", metavar="PATH",
                    help="lab.toml of the lab to test (default: ./lab.toml)")
    group.addoption("--lab-name", default=None, metavar="NAME",
                    help="override the lab name from the config")
    group.addoption("--lab-logs-dir", default="lab-logs", metavar="DIR",
                    help="where `lab logs` tarballs of failing tests go (default: ./lab-logs)")
    group.addoption("--lab-report", default=None, metavar="PATH",
                    help="write the run's HTML summary (connectivity matrix, scenario groups, "
                         "failures) here (default: beside --junitxml, as <stem>.html)")
    group.addoption("--lab-upgrade-from", default=None, metavar="PATH",
                    help="the upgrade scenario's old build: the plugin file its first pods "
                         "are made by (default: the lab's plugin.path)")
    group.addoption("--lab-upgrade-to", default=None, metavar="PATH",
                    help="the upgrade scenario's new build, deployed over the old one as "
                         "`lab deploy` does (default: the lab's plugin.path; when neither is "
                         "given, a byte-different second build of it)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RECORDER] = ProbeRecorder()
    _terminate_like_ctrl_c()


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (`timeout`, a CI job's limit) stops the run as Ctrl-C does: teardowns and
    `finally` blocks run, so pods and labs the run made go (its default would kill the
    process at once and leave them). A handler someone else set stays."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)


def _missing_config(config: pytest.Config) -> str | None:
    path = Path(config.getoption("--lab-config"))
    if path.exists():
        return None
    # pytest's own -c/--config is something else: name ours
    return (f"no lab config at {path.absolute()}: pass one with --lab-config PATH "
            f"({examples_hint()})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before any test runs, one line (pytest's usage error) when tests need a lab and there
    is no config; runs without lab tests need none."""
    if any("lab" in getattr(item, "fixturenames", ()) for item in items):
        missing = _missing_config(config)
        if missing:
            raise pytest.UsageError(missing)


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config) -> Iterator[Any]:
    from lab.cluster.session import open_lab  # only scenarios pay for the config/provider imports

    path = Path(pytestconfig.getoption("--lab-config"))
    missing = _missing_config(pytestconfig)
    if missing:
        _stop(missing)
    try:
        opened = open_lab(path, pytestconfig.getoption("--lab-name"))
    except LabError as e:
        _stop(f"cannot open the lab from {path}:\n{e.describe()}")
    pytestconfig.stash[_LAB_KEY] = opened
    try:
        yield opened
    finally:
        pytestconfig.stash[_LAB_KEY] = None
        opened.close()


@pytest.fixture(scope="session")
def cluster(lab: Any, pytestconfig: pytest.Config) -> Cluster:
    path = pytestconfig.getoption("--lab-config")
    name = pytestconfig.getoption("--lab-name")
    up = f"lab up -c {path}" + (f" --name {name}" if name else "")
    try:
        if not lab.nodes():
            raise LabError(f"lab {lab.name} has no nodes")
    except LabError as e:
        _stop(f"lab {lab.name} is not up: run `{up}` first\n{e.describe()}")
    try:    # a lab made from another config would be judged against the wrong network
        from lab.cluster.actions import refuse_a_foreign_lab

        refuse_a_foreign_lab(lab.config, lab.nodes(),
                             hint=f"pass the config it was made from as --lab-config, or "
                                  f"`lab down --name {lab.name}` and `{up}`")
    except LabError as e:
        _stop(e.describe())
    try:
        made: Cluster = lab.cluster()
        return made
    except LabError as e:
        _stop(f"lab {lab.name} is not up: run `{up}` first\n{e.describe()}")


def examples_hint() -> str:
    """Where example lab configs are: beside this install in a checkout, else in one."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    if examples.is_dir():
        return f"examples: {examples}/netns-hostgw.toml and the others there"
    return "examples: examples/*.toml in a cnilab checkout, e.g. netns-hostgw.toml"


def _stop(why: str) -> NoReturn:
    """Ends the whole run with one message: every scenario needs the lab, so twenty identical
    errors would say nothing more (the exit code is 1: never a green run without a lab)."""
    pytest.exit(why, returncode=pytest.ExitCode.TESTS_FAILED)


@pytest.fixture(scope="session")
def probe_recorder(pytestconfig: pytest.Config) -> ProbeRecorder:
    """Where the run's traffic probes report what they did (the end-of-run summary)."""
    return pytestconfig.stash[_RECORDER]


@pytest.fixture(scope="session")
def nodes(cluster: Cluster) -> list[Node]:
    return cluster.nodes()


@pytest.fixture(scope="session")
def node_host() -> Callable[[Node], Any]:
    """node -> a pytest-testinfra host on it (netns://, paramiko://, … from node.testinfra_url)."""
    import testinfra

    hosts: dict[str, Any] = {}

    def get(node: Node) -> Any:
        if node.name not in hosts:
            hosts[node.name] = testinfra.get_host(node.testinfra_url)
        return hosts[node.name]

    return get


@pytest.fixture
def pod_factory(cluster: Cluster) -> Iterator[Callable[..., Pod]]:
    """pod_factory(node, prefix="pod", options=None) -> a new Pod on node (options: CNI_ARGS
    and capability arguments, netns/VM labs); all are deleted after the test, a pod whose
    start was interrupted too."""
    made: list[Pod] = []
    starting: list[str] = []

    def make(node: Node | str, prefix: str = "pod", options: AttachOptions | None = None) -> Pod:
        node_name = node if isinstance(node, str) else node.name
        name = f"{prefix}-{secrets.token_hex(3)}"
        starting.append(name)      # named before it exists: Ctrl-C mid-start still cleans up
        pod = cluster.create_pod(name, node_name, options) if options else \
            cluster.create_pod(name, node_name)
        starting.remove(name)
        made.append(pod)
        return pod

    yield make

    if _Interrupt.seen:
        # Ctrl-C: stop within seconds. Ask for every deletion, wait for no teardown.
        discard = getattr(cluster, "discard_pod", None)
        for name in [*starting, *(pod.name for pod in made)]:
            with contextlib.suppress(Exception):
                if discard is not None:
                    discard(name)
        if discard is None:
            for pod in made:
                with contextlib.suppress(Exception):
                    cluster.delete_pod(pod)
        return

    def delete(pod: Pod) -> str | None:
        try:
            cluster.delete_pod(pod)
        except LabError as e:
            return e.describe()
        return None

    discard = getattr(cluster, "discard_pod", None)
    for name in starting:            # a start that failed has deleted its pod already
        with contextlib.suppress(Exception):
            if discard is not None:
                discard(name)
    # At once: on Kubernetes each delete waits for the kubelet's teardown (seconds apiece).
    with ThreadPoolExecutor(max_workers=8) as pool:
        errors = [e for e in pool.map(delete, reversed(made)) if e]
    if errors:
        pytest.fail("deleting the test's pods failed:\n" + "\n".join(errors), pytrace=False)


class _Interrupt:
    seen = False      # one pytest run per process: a class attribute is the run's flag


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """pytest calls this before it tears the session's fixtures down: that teardown then
    takes the quick way (pod_factory)."""
    _Interrupt.seen = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    opened = item.config.stash.get(_LAB_KEY, None)
    uses_lab = "lab" in getattr(item, "fixturenames", ())
    if uses_lab:
        _record_outcome(item, report)
    if report.failed and report.when == "call" and opened is not None and uses_lab:
        _attach_lab_logs(item, report, opened)
    return report


def _attach_lab_logs(item: pytest.Item, report: pytest.TestReport, opened: Any) -> None:
    from lab.cluster.logs import write_tarball

    logs_dir = Path(item.config.getoption("--lab-logs-dir"))
    safe_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-120:]
    lines = []
    calls = [call for cluster in getattr(opened, "_clusters", [])
             for call in getattr(cluster, "plugin_calls", list)()]
    extra = {"plugin-calls.txt": "\n".join(calls) + "\n"} if calls else {}
    try:
        # per lab: the same test run against two labs keeps both tarballs
        tarball = write_tarball(opened.provider, opened.name,
                                logs_dir / opened.name / f"{safe_id}.tar.gz", extra)
        item.user_properties.append(("lab_logs", str(tarball.resolve())))
        lines.append(f"lab logs: {tarball.resolve()}")
    except Exception as e:  # logs are a courtesy: never hide the test's own failure
        lines.append(f"collecting lab logs failed: {e}")
    try:
        for node in opened.nodes():
            for argv in EXCERPT_COMMANDS:
                res = node.run(argv, timeout=10)
                lines.append(f"[{node.name}] $ {' '.join(argv)}\n{res.stdout.rstrip()}")
    except Exception as e:
        lines.append(f"reading the nodes failed: {e}")
    if calls:
        lines.append("the runtime's last plugin calls (with the plugin's stderr):")
        lines += calls[-10:]
    text = "\n".join(lines)
    report.sections.append(("lab logs", text))
    item.user_properties.append(("lab_logs_excerpt", text[-4000:]))


# -- the run's summary ----------------------------------------------------------------------------
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[_RECORDER].scenario = item.nodeid


def _record_outcome(item: pytest.Item, report: pytest.TestReport) -> None:
    recorder = item.config.stash[_RECORDER]
    if report.failed:
        recorder.outcome(report.nodeid, "failed", _failure_message(report))
    elif report.skipped:
        recorder.outcome(report.nodeid, "skipped")
    elif report.when == "call":
        recorder.outcome(report.nodeid, "passed")


def _failure_message(report: pytest.TestReport) -> str:
    """What the scenario said: pytest.fail's message or the assertion, not the traceback."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", "") or report.longreprtext
    return message.removeprefix("Failed: ")[:20000]


def report_path(config: pytest.Config) -> Path | None:
    """--lab-report, else the --junitxml file's stem + .html, else none."""
    wanted = config.getoption("--lab-report")
    if wanted:
        return Path(wanted)
    junit = getattr(config.option, "xmlpath", None)
    return Path(junit).with_suffix(".html") if junit else None


def pytest_sessionfinish(session: pytest.Session) -> None:
    from lab.drivers.run_summary import summary_html

    config = session.config
    recorder = config.stash.get(_RECORDER, None)
    path = report_path(config)
    if recorder is None or path is None or not (recorder.outcomes or recorder.probes):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(summary_html(recorder, title=f"cnilab scenarios: {_lab_title(config)}"),
                        encoding="utf-8")
        config.stash[_REPORT] = path
    except OSError as e:     # a report is a courtesy: never turn a run's verdict around
        sys.stderr.write(f"cnilab: could not write the HTML report {path}: {e}\n")


def _lab_title(config: pytest.Config) -> str:
    name = config.getoption("--lab-name")
    return f"{config.getoption('--lab-config')}" + (f" (lab {name})" if name else "")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    from lab.drivers.run_summary import summary_text

    recorder = config.stash.get(_RECORDER, None)
    if recorder is None or not (recorder.outcomes or recorder.probes):
        return
    terminalreporter.write_sep("=", "cnilab summary")
    for line in summary_text(recorder, unicode=_terminal_speaks_utf8(terminalreporter)):
        terminalreporter.write_line(line)
    written = config.stash.get(_REPORT, None)
    if written is not None:
        terminalreporter.write_line(f"HTML report: {written.resolve()}")


def _terminal_speaks_utf8(terminalreporter: Any) -> bool:
    """Whether the terminal's stream can carry the marks (else the plain ASCII fallback)."""
    stream = getattr(getattr(terminalreporter, "_tw", None), "_file", None) or sys.stdout
    try:
        "✓✗·→…".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
