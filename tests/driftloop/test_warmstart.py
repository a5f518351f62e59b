"""driftloop.warmstart: a real server process forks the runs of real client processes.

The server runs ``tests.support.warm_engine`` (a stand-in for ``prefect.engine`` that reports where
and how it runs) instead of Prefect's engine; a cold start runs Prefect's engine itself, which
refuses the bad flow-run id the tests give it. The stack's flow runs through the real engine are
checked in test_stack.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from driftloop.procs import PROJECT_ROOT
from driftloop.warmstart import (
    SOCKET_ENV,
    changed_sources,
    fork_unsafe_threads,
    project_sources,
)
from tests.support.procs import descendants, stat

ENGINE = "tests.support.warm_engine"
PRELOADED = "tests.support.warm_preloaded"


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path
    watched: Path  # a module the server imported from its --root

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
        env.update({SOCKET_ENV: str(self.socket), **extra})
        return env

    def log_text(self) -> str:
        return self.log.read_text()


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stat(pid)[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def server() -> Iterator[Server]:
    short = Path(tempfile.mkdtemp(prefix="ws-"))  # a Unix socket path has at most 107 bytes
    root = short / "root"
    root.mkdir()
    watched = root / "warm_watched.py"
    watched.write_text("VALUE = 1\n")
    log = short / "server.log"
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    env["PYTHONPATH"] = str(root)
    cmd = [sys.executable, "-m", "driftloop.warmstart", "serve", "--socket", str(short / "s")]
    cmd += ["--root", str(root), "--engine", ENGINE, "--preload", PRELOADED, "warm_watched"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while "serving on" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Server(proc, short / "s", log, watched)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for child in short.rglob("*"):
            if child.is_file() or child.is_socket():
                child.unlink()
        for folder in sorted(short.rglob("*"), reverse=True):
            folder.rmdir()
        short.rmdir()


def _client(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftloop.warmstart", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _report(stdout: str) -> dict[str, object]:
    return json.loads(stdout.splitlines()[0])


def _waiting_client(server: Server, cwd: Path, what: str) -> tuple[subprocess.Popen[str], int]:
    """A client whose run (``wait`` or ``trap``) has reported itself and now waits; returns the
    client and the run's PID."""
    client = subprocess.Popen(
        [sys.executable, "-m", "driftloop.warmstart", what],
        env=server.env(),
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    run_pid = int(str(json.loads(client.stdout.readline())["pid"]))
    assert client.stdout.readline().strip() == "waiting"
    return client, run_pid


def test_a_run_is_forked_by_the_server_with_the_clients_io_env_cwd_and_exit_status(
    server: Server, tmp_path: Path
) -> None:
    done = _client(["exit", "5"], server.env(WARM_MARKER="m-1"), tmp_path)
    assert done.returncode == 5, done.stderr
    report = _report(done.stdout)
    assert report["ppid"] == server.proc.pid  # forked by the server, not started by the client
    assert report["preloaded"] is True  # and it had imported what the server preloaded
    assert report["cwd"] == str(tmp_path)
    assert report["argv"] == ["exit", "5"]
    assert report["marker"] == "m-1"
    assert done.stderr.strip() == "to stderr"  # nothing else: no cold-start note
    assert f"{report['pid']} exited (5)" in server.log_text()

    again = _client(["exit", "0"], server.env(WARM_MARKER="m-2"), tmp_path)
    assert again.returncode == 0
    assert _report(again.stdout)["marker"] == "m-2"  # each run its own environment


def test_sigterm_to_the_client_reaches_the_run_and_its_status_comes_back(
    server: Server, tmp_path: Path
) -> None:
    client, run_pid = _waiting_client(server, tmp_path, "trap")
    assert client.stdout is not None
    client.send_signal(signal.SIGTERM)
    assert client.wait(30) == 7  # the run's own handler decided the exit status
    assert client.stdout.read().strip() == "got SIGTERM"
    assert _gone(run_pid, 10)


def test_a_run_killed_by_a_signal_kills_its_client_with_the_same_signal(
    server: Server, tmp_path: Path
) -> None:
    client, run_pid = _waiting_client(server, tmp_path, "wait")
    os.kill(run_pid, signal.SIGKILL)
    assert client.wait(30) == -signal.SIGKILL


def test_a_client_killed_outright_takes_its_run_with_it(server: Server, tmp_path: Path) -> None:
    client, run_pid = _waiting_client(server, tmp_path, "wait")
    client.kill()  # SIGKILL: the client cannot forward it
    client.wait(10)
    assert _gone(run_pid, 10), "the run outlived its client"
    assert server.proc.poll() is None  # the server goes on serving
    assert _client(["exit", "0"], server.env(), tmp_path).returncode == 0


def test_changed_code_starts_runs_cold_until_the_server_restarted_with_it(
    server: Server, tmp_path: Path
) -> None:
    before = _client(["exit", "0"], server.env(), tmp_path)
    assert _report(before.stdout)["ppid"] == server.proc.pid
    stat_before = server.watched.stat()
    server.watched.write_text("VALUE = 2\n")
    os.utime(server.watched, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns + 10**9))
    # refused: the client becomes Prefect's engine itself, which refuses the bad flow-run id
    cold = _client(["not-a-flow-run-id"], server.env(), tmp_path, timeout=120)
    assert cold.returncode == 1
    assert "warmstart: cold start (the project's code changed (1 files); cold start)" in cold.stderr
    assert "Invalid flow run id" in cold.stderr
    # with no run of its own left, the server re-executed itself (same PID) with the new code
    deadline = time.monotonic() + 60
    while server.log_text().count("serving on") < 2:
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.1)
    assert "code changed" in server.log_text()
    warm = _client(["exit", "0"], server.env(), tmp_path)
    assert warm.returncode == 0
    assert _report(warm.stdout)["ppid"] == server.proc.pid
    assert warm.stderr.strip() == "to stderr"


def test_with_no_server_a_run_starts_cold_as_prefects_own_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    env[SOCKET_ENV] = str(tmp_path / "nobody-listens")
    done = _client(["not-a-flow-run-id"], env, tmp_path, timeout=120)
    assert done.returncode == 1
    assert "warmstart: cold start" in done.stderr
    assert "Invalid flow run id" in done.stderr
    env.pop(SOCKET_ENV)  # warm starts off: no note, straight to the engine
    plain = _client(["not-a-flow-run-id"], env, tmp_path, timeout=120)
    assert plain.returncode == 1
    assert "warmstart" not in plain.stderr
    assert "Invalid flow run id" in plain.stderr


def test_a_server_refuses_to_fork_with_threads_running() -> None:
    assert fork_unsafe_threads() == [] or all(
        name != "MainThread" for name in fork_unsafe_threads()
    )
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="busy-worker")
    worker.start()
    try:
        assert "busy-worker" in fork_unsafe_threads()
    finally:
        stop.set()
        worker.join()
    assert "busy-worker" not in fork_unsafe_threads()


def test_project_sources_are_the_imported_modules_under_the_root(tmp_path: Path) -> None:
    import tests.support.warm_preloaded as module

    snapshot = project_sources(PROJECT_ROOT)
    path = str(Path(module.__file__ or "").resolve())
    assert path in snapshot
    assert not any("site-packages" in p for p in snapshot)
    assert changed_sources(snapshot) == []
    assert changed_sources({**snapshot, path: snapshot[path] - 1}) == [path]
    assert changed_sources({str(tmp_path / "gone.py"): 1}) == [str(tmp_path / "gone.py")]


def test_a_run_whose_client_cannot_be_told_its_pid_is_killed_and_reaped(
    server: Server, tmp_path: Path
) -> None:
    """A client that sends its request but can no longer receive (it shut its reading side, as a
    client dying at that moment would): the server forks the run, cannot tell the client its PID
    (the reply fails), kills the run, and reaps it with no other run in flight (no zombie left)."""
    import socket as sockets
    import struct

    body = json.dumps({"argv": ["wait"], "env": server.env(), "cwd": str(tmp_path)}).encode()
    with (
        open(os.devnull, "rb") as null_in,
        open(os.devnull, "wb") as null_out,
        sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as sock,
    ):
        sock.connect(str(server.socket))
        sock.shutdown(sockets.SHUT_RD)  # the server's reply fails (EPIPE), whenever it is sent
        fds = [null_in.fileno(), null_out.fileno(), null_out.fileno()]
        sockets.send_fds(sock, [struct.pack("!I", len(body)) + body], fds)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            killed = re.search(r"killed as (\d+): its client could not be told", server.log_text())
            if killed and int(killed[1]) not in descendants(server.proc.pid):
                break
            time.sleep(0.05)
    # the run was forked and killed, and is gone: reaped, not left a zombie
    assert killed, server.log_text()
    assert descendants(server.proc.pid) == set()
    assert "started as" not in server.log_text()  # it was never handed to the client
    assert server.proc.poll() is None, server.log_text()
    # the server still serves
    done = _client(["exit", "0"], server.env(), tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_run_that_started_is_never_started_again_whatever_the_server_answers(
    tmp_path: Path,
) -> None:
    """A server that reports a run and then answers nonsense: the client waits for that run to
    end and fails; it does not fall back to starting it cold (that would run the flow twice)."""
    import socket as sockets

    short = Path(tempfile.mkdtemp(prefix="ws-"))
    path = short / "s"
    listener = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    run = subprocess.Popen(["sleep", "1.5"])  # stands for the forked run
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    env[SOCKET_ENV] = str(path)
    client = subprocess.Popen(
        [sys.executable, "-m", "driftloop.warmstart", "not-a-flow-run-id"],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        conn, _ = listener.accept()
        with conn:
            _, fds, _, _ = sockets.recv_fds(conn, 1 << 20, 3)
            for fd in fds:  # the client's stdio: held open here, its stderr would never end
                os.close(fd)
            conn.sendall(json.dumps({"pid": run.pid}).encode() + b"\nnot json\n")
            started = time.monotonic()
            _, stderr = client.communicate(timeout=60)
        assert client.returncode == 1
        assert time.monotonic() - started >= 1.0  # it waited for the run to end
        assert "unreadable reply from the server" in stderr
        assert "cold start" not in stderr and "Invalid flow run id" not in stderr
    finally:
        run.wait(10)
        listener.close()
        path.unlink(missing_ok=True)
        short.rmdir()


@pytest.mark.parametrize(("openblas", "serves"), [(None, True), ("2", False)])
def test_numpy_and_scipy_preloaded_leave_no_thread_behind_unless_told_to(
    openblas: str | None, serves: bool, tmp_path: Path
) -> None:
    """OpenBLAS starts a thread per core when numpy or scipy loads: with no thread settings at
    all (a `driftloop up` on a laptop) the server keeps it to one and serves; told to use two
    BLAS threads it refuses, saying why (the runs then start cold)."""
    short = Path(tempfile.mkdtemp(prefix="ws-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k != SOCKET_ENV and not k.endswith("_NUM_THREADS")  # OMP_, OPENBLAS_, MKL_ ...
    }
    if openblas is not None:
        env["OPENBLAS_NUM_THREADS"] = openblas
    cmd = [sys.executable, "-m", "driftloop.warmstart", "serve", "--socket", str(short / "s")]
    cmd += ["--root", str(tmp_path), "--engine", ENGINE, "--preload", "numpy", "scipy.linalg"]
    proc = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        code = None if "serving on" in first else proc.wait(60)  # a refusal ends the server
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        (short / "s").unlink(missing_ok=True)
        short.rmdir()
    if serves:
        assert first.startswith(f"warmstart: serving on {short / 's'}"), first
    else:
        assert "threads running after the imports" in first and "it is '2'" in first, first
        assert code == 1
