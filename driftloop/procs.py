"""Local server processes started by driftloop and stopped by PID: the stack's (``driftloop up``)
and the local Prefect API server of the CLI (:mod:`driftloop.localapi`).

Each process is started detached, in its own session and process group (a Ctrl-C in the terminal
does not reach it, and its own subprocesses go with it when it is stopped), and recorded as a
:class:`Proc` with its kernel start time: a PID the kernel gave to another process since is never
taken for ours.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from driftloop_config.redact import redact
from driftloop_config.settings import PROJECT_ROOT

#: seconds a server gets to answer after its start
START_TIMEOUT = 120.0


class StackError(RuntimeError):
    """A local server (the stack's, or the local Prefect API) cannot be started or stopped."""


@dataclass
class Proc:
    name: str
    pid: int
    cmdline: list[str]
    log: str
    started: int | None = None  # kernel start time of the PID: tells it from a reused PID


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """``preferred`` when it is free, otherwise a free port the OS picks."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a PID from /proc, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return fields[0], int(fields[19])


def alive(proc: Proc) -> bool:
    """The recorded process still runs and is the one we started (not a reused PID)."""
    if not Path("/proc").is_dir():  # no /proc (macOS): trust the PID
        try:
            os.kill(proc.pid, 0)
        except OSError:
            return False
        return True
    stat = proc_stat(proc.pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return proc.started is None or stat[1] == proc.started


def bin_path(name: str) -> str:
    """A console script of this virtualenv (``prefect``, ``mlflow``, ``driftloop``)."""
    return str(Path(sys.executable).parent / name)


def spawn(name: str, cmd: list[str], env: dict[str, str], logs: Path) -> Proc:
    """Start ``cmd`` detached (own session), output appended to ``<logs>/<name>.log``."""
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    stat = proc_stat(popen.pid)
    return Proc(
        name=name,
        pid=popen.pid,
        cmdline=[redact(arg) for arg in cmd],
        log=str(log),
        started=stat[1] if stat else None,
    )


def wait_http(url: str, proc: Proc, timeout: float = START_TIMEOUT) -> None:
    """Return once ``url`` answers (below 500); :class:`StackError` when ``proc`` exits first or
    nothing answers within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(proc):
            raise StackError(f"{proc.name} exited during start-up; see {proc.log}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise StackError(f"{proc.name} did not answer at {url} within {timeout:.0f}s; see {proc.log}")


def signal_group(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_gone(procs: Iterable[Proc], timeout: float) -> list[Proc]:
    """The processes of ``procs`` still alive after waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


def reap(pid: int) -> None:
    """Collect the exit status when the process is our child (tests start servers in-process)."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(procs: Iterable[Proc], timeout: float = 15.0) -> list[Proc]:
    """SIGTERM to the process group of each of ``procs`` still alive (checked by PID and start
    time), SIGKILL to those left after ``timeout`` seconds; returns those that were alive.
    :class:`StackError` when one survives even that."""
    running = [p for p in procs if alive(p)]
    for p in running:
        signal_group(p.pid, signal.SIGTERM)
    for p in running:
        reap(p.pid)
    left = wait_gone(running, timeout)
    for p in left:
        signal_group(p.pid, signal.SIGKILL)
    for p in running:
        reap(p.pid)
    if wait_gone(left, 5.0):
        raise StackError(f"could not stop {[p.name for p in left]}")
    return running
