"""The Prefect API of the CLI commands (``driftloop.localapi``), through the real CLI in
subprocesses with no ``PREFECT_API_URL``: one local API server per state folder, started by the
first command, reused by the next, started once however many commands start at once, never left
unrecorded by a command stopped with SIGTERM/SIGINT, replaced when it died, stopped by
``driftloop down``; an explicit API or a running stack's is used instead.

Every process a test starts carries a marker in its environment (inherited by the server the CLI
starts); the fixtures stop every marked process by PID, whatever happens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from driftloop import api
from driftloop.localapi import SERVER_NAME, ensure_api, read_server, server_file
from driftloop.procs import Proc, alive, proc_stat
from driftloop.stack import Stack, _write_stack, stack_dir
from driftloop_config.settings import PROJECT_ROOT, Settings, load_settings
from tests.support.prefect_server import stack_server
from tests.support.procs import descendants, stat

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MARKER = "LOCALAPI_TEST_MARK"  # not DRIFTLOOP_*: the settings refuse unknown ones


def _proc_files(pid: int) -> tuple[list[bytes], list[str]] | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    return env, cmd


def marked(mark: str) -> dict[int, list[str]]:
    """PID -> command line of every live process carrying ``mark`` in its environment."""
    want = f"{MARKER}={mark}".encode()
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            files = _proc_files(int(entry.name))
            if files is not None and want in files[0]:
                out[int(entry.name)] = files[1]
    return out


def _servers(procs: dict[int, list[str]]) -> list[int]:
    """The Prefect servers among ``procs`` (``prefect server start``)."""
    return sorted(pid for pid, cmd in procs.items() if "\0server\0start\0" in "\0".join(cmd))


def _default_interrupts() -> None:
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


class Cli:
    """The real CLI in subprocesses, on an empty lake under ``tmp``, without PREFECT_API_URL."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mark = uuid.uuid4().hex
        (tmp / "lake").mkdir()
        monkeypatch.setenv("DRIFTLOOP_DATA_ROOT", str(tmp / "lake"))
        monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp / "state"))
        self.settings: Settings = load_settings()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
        self.env.pop("PREFECT_API_URL", None)
        self.env.update(
            {
                "DRIFTLOOP_DATA_ROOT": str(tmp / "lake"),
                "DRIFTLOOP_STATE_DIR": str(tmp / "state"),
                "PREFECT_HOME": str(tmp / "cli-prefect-home"),  # no developer's profile
                MARKER: self.mark,
            }
        )

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "driftloop.cli", *args]

    def run(self, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
        t0 = time.perf_counter()
        done = subprocess.run(
            self.argv(*args),
            cwd=PROJECT_ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        return done, time.perf_counter() - t0

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The command in the background, with SIGINT and SIGQUIT at their default as a terminal
        gives them (a shell without job control starts its background commands with them ignored,
        perhaps this test session too, and a command keeps what it inherits)."""
        return subprocess.Popen(
            self.argv(*args),
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=_default_interrupts,
        )

    def server(self) -> Proc:
        recorded = read_server(self.settings)
        assert recorded is not None, f"no server recorded in {server_file(self.settings)}"
        return recorded.proc

    def runs(self, api_url: str) -> list[str]:
        """Names of the flows of the runs the API at ``api_url`` holds."""
        with api.client(api_url) as http:
            r = http.post("/flow_runs/filter", json={})
            r.raise_for_status()
            flows = {f["id"]: f["name"] for f in http.post("/flows/filter", json={}).json()}
            return sorted(flows[run["flow_id"]] for run in r.json())

    def cleanup(self) -> None:
        """Every marked process, by PID: SIGTERM to its group, SIGKILL to what is left."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = marked(self.mark)
            for pid in left:
                for kill in (os.killpg, os.kill):
                    with suppress(ProcessLookupError, PermissionError):
                        kill(pid, sig)
            deadline = time.monotonic() + 15
            while marked(self.mark) and time.monotonic() < deadline:
                time.sleep(0.2)
        assert not marked(self.mark), f"processes left: {marked(self.mark)}"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    c = Cli(tmp_path, monkeypatch)
    try:
        yield c
    finally:
        c.cleanup()


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing new landed" in done.stdout
    # Prefect logs this when it starts a server of its own inside the process
    assert "Starting temporary server" not in done.stdout + done.stderr


def test_a_server_is_started_reused_replaced_when_dead_and_stopped_by_down(
    cli: Cli,
) -> None:
    assert read_server(cli.settings) is None
    first, t_first = cli.run("ingest")
    _ok(first)
    server = cli.server()
    assert alive(server)
    # one server, the recorded one, and nothing else of the command left
    assert _servers(marked(cli.mark)) == [server.pid]
    assert set(marked(cli.mark)) <= {server.pid} | descendants(server.pid)
    # detached: its own session and process group, not the command's
    _state, _ppid, pgrp, session = stat(server.pid)[:4]
    assert int(pgrp) == int(session) == server.pid
    assert Path(server.log).name == f"{SERVER_NAME}.log"
    recorded = read_server(cli.settings)
    assert recorded is not None
    assert recorded.api_url.startswith("http://127.0.0.1:")
    assert cli.runs(recorded.api_url) == ["ingest"]  # the command's run went to this server

    second, t_second = cli.run("ingest")
    _ok(second)
    print(f"\nfirst command {t_first:.1f}s (starts the server), second {t_second:.1f}s (reuses it)")
    assert cli.server() == server  # same PID, same start time
    assert _servers(marked(cli.mark)) == [server.pid]
    assert cli.runs(recorded.api_url) == ["ingest", "ingest"]

    status, _ = cli.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"local Prefect API server: {recorded.api_url} (pid {server.pid})" in status.stdout

    # a server that died is replaced by the next command
    os.killpg(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(server)
    _ok(cli.run("ingest")[0])
    dead, server = server, cli.server()
    assert server.pid != dead.pid and alive(server)
    assert _servers(marked(cli.mark)) == [server.pid]

    down, _ = cli.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"stopped {SERVER_NAME}" in down.stdout
    assert proc_stat(server.pid) is None or not alive(server)
    assert not marked(cli.mark)
    assert read_server(cli.settings) is None
    again, _ = cli.run("down")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing was running" in again.stdout


def test_two_commands_started_at_once_share_one_server(cli: Cli) -> None:
    procs = [cli.start("ingest"), cli.start("ingest")]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs
    server = cli.server()
    assert _servers(marked(cli.mark)) == [server.pid]
    recorded = read_server(cli.settings)
    assert recorded is not None
    assert cli.runs(recorded.api_url) == ["ingest", "ingest"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_command_stopped_while_starting_the_server_leaves_only_the_recorded_server(
    cli: Cli, sig: signal.Signals
) -> None:
    proc = cli.start("ingest")
    try:
        # wait for the server the command starts, then stop the command (not its children)
        deadline = time.monotonic() + 120
        while not _servers(marked(cli.mark)) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.05)
        before = descendants(proc.pid)
        [started] = _servers(marked(cli.mark))
        assert started in before
        os.kill(proc.pid, sig)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, out  # it was stopped, it did not finish
    server = cli.server()
    assert server.pid == started and alive(server)
    group = {server.pid} | descendants(server.pid)
    # of the command's processes, only the recorded server (and its own children) remain
    assert {pid for pid in before if proc_stat(pid) is not None} <= group
    assert set(marked(cli.mark)) <= group
    # the next command reuses it
    nxt = cli.run("ingest")[0]
    _ok(nxt)
    assert cli.server() == server, nxt.stderr  # the old one still answers
    assert _servers(marked(cli.mark)) == [server.pid]


def test_an_explicit_api_url_or_a_running_stack_is_used_instead(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another real Prefect server, as `driftloop up` starts it (carries the marker: stopped)
    monkeypatch.setenv(MARKER, cli.mark)
    monkeypatch.setenv("DRIFTLOOP_STATE_DIR", str(tmp_path / "other-state"))
    other = load_settings()
    with stack_server(other) as srv:
        done, _ = cli.run("ingest", PREFECT_API_URL=srv.api)
        _ok(done)
        assert srv.proc is not None
        assert not server_file(cli.settings).exists()
        assert _servers(marked(cli.mark)) == [srv.proc.pid]
        assert cli.runs(srv.api) == ["ingest"]

        # the same server recorded as the running stack's: the command uses it
        stack_dir(cli.settings).mkdir(parents=True)
        _write_stack(cli.settings, Stack(prefect_url=srv.url, mlflow_url="", processes=[srv.proc]))
        done, _ = cli.run("ingest")
        _ok(done)
        assert not server_file(cli.settings).exists()
        assert _servers(marked(cli.mark)) == [srv.proc.pid]
        assert cli.runs(srv.api) == ["ingest", "ingest"]


@pytest.mark.usefixtures("prefect_harness")
def test_in_process_the_harness_api_is_used(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    harness = PREFECT_API_URL.value()
    assert harness
    assert ensure_api(cli.settings) == harness
    assert "PREFECT_API_URL" not in os.environ  # the harness's own setting, not exported
    assert not server_file(cli.settings).exists()
