"""Warm starts for the stack's flow runs: a process that has imported Prefect, the flow modules and
the libraries their tasks use forks each flow run instead of a new interpreter importing them.

A process worker starts every flow run as a new ``python -m prefect.engine``, which imports
Prefect and the flow module before the run is even Running (~3 s here), and then pandas,
scikit-learn, MLflow, Feast and GX as its tasks need them (seconds more per run). The stack's
deployments start ``python -m driftloop.warmstart`` instead (``command`` in prefect.yaml):

* **client** (this module run with no arguments; the standard library only, so it starts in a few
  milliseconds): connects to the server's Unix socket (``DRIFTLOOP_WARMSTART_SOCKET``, set by
  ``driftloop up``) and hands it the run's arguments, environment, working directory and its own
  stdin/stdout/stderr. It stays the process the worker watches: it forwards the signals it gets
  (SIGTERM on cancellation) to the forked run and exits with the run's exit status. With no
  server, one that refuses (its code changed, see below) or any error on the socket, it becomes
  ``python -m prefect.engine`` itself (``exec``): a cold start, as without this module.
* **server** (``python -m driftloop.warmstart serve --socket PATH``, started by ``driftloop up``):
  imports :data:`PRELOAD`, checks that it is still one thread (a fork copies only the calling
  thread; the one native thread allowed is jemalloc's, which handles forks itself), then for each
  client forks a child that takes the client's file descriptors, environment and directory,
  refreshes Prefect's settings from that environment and runs ``prefect.engine`` as ``__main__``,
  exactly as the cold command would. It reports the child's exit status to its client, and kills
  the child when its client dies without one (the worker killed it). It accepts only processes of
  its own user (``SO_PEERCRED``).

Code changes: the server remembers the modification times of the project modules it imported. A
launch that finds one changed is refused (a cold start, which reads the new code), and once no
run it forked is left the server re-executes itself, so later runs are warm again with the new
code. Packages installed while the stack runs are not watched: ``driftloop up`` again.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the environment variable that tells the client where the server listens
SOCKET_ENV = "DRIFTLOOP_WARMSTART_SOCKET"
#: the module a flow run runs as __main__ (the process worker's own default command runs it)
ENGINE = "prefect.engine"
#: the flow run's id in its environment (set by the worker)
RUN_ENV = "PREFECT__FLOW_RUN_ID"
#: imported by the server before it serves: the engine, the flow modules of prefect.yaml and the
#: libraries their tasks import when they run
PRELOAD = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect._internal.metrics",
    "flows.ingest",
    "flows.features",
    "flows.train",
    "flows.score",
    "flows.drift",
    "flows.reconcile",
    "pandas",
    "pyarrow.parquet",
    "duckdb",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.inspection",
    "scipy.stats",
    "great_expectations",
    "feast",
    "mlflow",
    "mlflow.sklearn",
    "matplotlib.figure",
    "skops.io",
    "boto3",
)
#: native threads a fork may leave behind safely (jemalloc re-creates its own in the child)
FORK_SAFE_THREADS = frozenset({"jemalloc_bg_thd"})
#: signals the client forwards to the run
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
_HEADER = struct.Struct("!I")
_MAX_REQUEST = 16 * 1024 * 1024


class Refused(RuntimeError):
    """The server would not fork this run (the client starts it cold)."""


# --- client -------------------------------------------------------------------------------------


def _send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def _cold_start(argv: Sequence[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", ENGINE, *argv])


def launch(path: str, argv: Sequence[str]) -> int:
    """Run the flow run in a child of the server at ``path``; returns its exit status (a negative
    number: killed by that signal). Raises (:class:`Refused`, :class:`OSError`, ValueError)
    only when no child was started: once one was, the run is never started a second time."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    if _peer_uid(sock) != os.getuid():  # the environment holds secrets: only to our own server
        raise Refused("the socket's server runs as another user")
    request = json.dumps({"argv": list(argv), "env": dict(os.environ), "cwd": os.getcwd()})
    body = request.encode()
    socket.send_fds(sock, [_HEADER.pack(len(body)) + body], [0, 1, 2])
    replies = sock.makefile("r", encoding="utf-8")
    first = replies.readline()
    if not first:
        raise Refused("the server closed the connection")
    started = json.loads(first)
    if "refused" in started:
        raise Refused(started["refused"])
    pid = int(started["pid"])

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    try:
        line = replies.readline()
        if line:
            return int(json.loads(line)["exit"])
        problem = "lost the server"
    except (OSError, ValueError, KeyError) as exc:
        problem = f"unreadable reply from the server ({exc})"
    # the run may still be going: wait for it rather than start it again
    print(f"warmstart: {problem}; waiting for run process {pid}", file=sys.stderr)
    while _alive(pid):
        time.sleep(0.5)
    return 1


def _alive(pid: int) -> bool:
    """``pid`` exists and has not exited (a zombie, exited but not yet reaped, has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: kill(0) is all there is
    return state not in ("Z", "X")


def client(argv: Sequence[str]) -> int:
    """The command of a flow run: a warm start through the server when there is one, else cold."""
    path = os.environ.get(SOCKET_ENV)
    if path:
        try:
            status = launch(path, argv)
        except (OSError, Refused, ValueError, KeyError) as exc:
            print(f"warmstart: cold start ({exc})", file=sys.stderr)
        else:
            if status < 0:  # die of the same signal, so the worker sees what the run saw
                if -status not in (signal.SIGKILL, signal.SIGSTOP):
                    signal.signal(-status, signal.SIG_DFL)
                os.kill(os.getpid(), -status)
                return 128 - status  # a signal whose default is not to end the process
            return status
    _cold_start(argv)
    return 1  # not reached: exec replaced this process


# --- server -------------------------------------------------------------------------------------


def preload(modules: Sequence[str]) -> dict[str, str]:
    """Import ``modules``; returns those that failed, with the error (they are imported by the
    runs themselves, as on a cold start)."""
    import importlib
    import warnings

    failed: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # a run imports it again and reports it where it belongs
                failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


def native_threads() -> list[str]:
    """The names of this process's threads other than the calling one (Linux: /proc)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return []
    me = str(os.getpid())
    names = []
    for tid in os.listdir(tasks):
        if tid == me:
            continue
        try:
            names.append((tasks / tid / "comm").read_text().strip())
        except OSError:
            continue
    return names


def fork_unsafe_threads() -> list[str]:
    """Threads that a fork would leave half-copied: every Python thread but this one, and every
    native thread not in :data:`FORK_SAFE_THREADS`."""
    import threading

    python = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    native = [n for n in native_threads() if n not in FORK_SAFE_THREADS]
    return python + native


def project_sources(root: Path) -> dict[str, int]:
    """Modification times (ns) of the imported modules whose files are in ``root`` (the project's
    own code; installed packages are left out)."""
    root = root.resolve()
    out: dict[str, int] = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or "site-packages" in file:
            continue
        path = Path(file).resolve()
        if path.is_relative_to(root):
            try:
                out[str(path)] = os.stat(path).st_mtime_ns
            except OSError:
                out[str(path)] = -1
    return out


def changed_sources(snapshot: dict[str, int]) -> list[str]:
    changed = []
    for path, mtime in snapshot.items():
        try:
            now = os.stat(path).st_mtime_ns
        except OSError:
            now = -1
        if now != mtime:
            changed.append(path)
    return changed


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    if len(data) < _HEADER.size:
        for fd in fds:
            os.close(fd)
        raise Refused("incomplete request")
    (size,) = _HEADER.unpack_from(data)
    if size > _MAX_REQUEST:
        for fd in fds:
            os.close(fd)
        raise Refused(f"request of {size} bytes")
    body = bytearray(data[_HEADER.size :])
    while len(body) < size:
        more = conn.recv(size - len(body))
        if not more:
            break
        body += more
    if len(body) != size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise Refused("incomplete request")
    return json.loads(body), fds


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def run_child(request: dict[str, Any], fds: list[int], engine: str = ENGINE) -> None:
    """In the forked child: become the flow run the client asked for (``engine`` run as
    ``__main__`` with the client's arguments); never returns."""
    import runpy
    import warnings

    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [engine, *request["argv"]]
        context = sys.modules.get("prefect.context")
        if context is not None:  # Prefect read its settings at import, from the server's env
            context.refresh_global_settings_context()
        with warnings.catch_warnings():
            # runpy warns that prefect.engine is imported already (the server preloaded it)
            warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
            try:
                runpy.run_module(engine, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        _shutdown_like_an_interpreter()
        os._exit(code)


def _shutdown_like_an_interpreter() -> None:
    """What a normal interpreter exit does before it ends: join non-daemon threads, run the
    ``atexit`` handlers (Prefect drains its log and event queues there), flush stdout/stderr."""
    import atexit
    import threading

    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


def serve(
    path: Path,
    *,
    modules: Sequence[str] = PRELOAD,
    root: Path | None = None,
    engine: str = ENGINE,
) -> None:
    """Preload ``modules`` and fork a flow run for every client on the Unix socket ``path``
    (until SIGTERM). ``root``: the project folder whose modules are watched for changes;
    ``engine``: the module each child runs as ``__main__``."""
    import selectors

    started = time.monotonic()
    # OpenBLAS (numpy's and scipy's) starts a pool of threads for every core when it is loaded,
    # which a fork would leave behind half-copied: one thread here, so none is started. The
    # forked runs keep one BLAS thread (nothing in the loop leans on BLAS); OpenMP, which the
    # trees use, starts its threads in each run when they are first needed. A value set in the
    # stack's environment is kept (more than one: runs start cold, the check below says why).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    failed = preload(modules)
    for name, error in failed.items():
        print(f"warmstart: could not preload {name}: {error}", flush=True)
    unsafe = fork_unsafe_threads()
    if unsafe:
        raise SystemExit(
            f"warmstart: threads running after the imports: {unsafe}; not serving (OpenBLAS "
            f"starts one per core unless OPENBLAS_NUM_THREADS=1; it is "
            f"{os.environ.get('OPENBLAS_NUM_THREADS')!r})"
        )
    snapshot = project_sources(root or Path.cwd())
    # the imported objects move to a generation the collector never scans: a child's collections
    # then do not touch (and so copy) the pages it shares with this process
    gc.freeze()
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    runs: dict[int, socket.socket] = {}  # child pid -> its client
    stale: list[str] = []
    print(
        f"warmstart: serving on {path} ({len(modules) - len(failed)} modules preloaded in "
        f"{time.monotonic() - started:.1f}s, {len(snapshot)} project files watched)",
        flush=True,
    )

    def refuse(conn: socket.socket, reason: str) -> None:
        with contextlib.suppress(OSError):
            _send_message(conn, {"refused": reason})
        conn.close()

    def accept() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5.0)
        try:
            if _peer_uid(conn) != os.getuid():
                refuse(conn, "another user's process")
                return
            request, fds = _read_request(conn)
        except (OSError, Refused, ValueError) as exc:
            refuse(conn, f"bad request: {exc}")
            return
        if not stale:
            stale.extend(changed_sources(snapshot))
        if stale:
            for fd in fds:
                os.close(fd)
            refuse(conn, f"the project's code changed ({len(stale)} files); cold start")
            return
        pid = os.fork()
        if pid == 0:
            listener.close()
            os.close(wake_r)
            os.close(wake_w)
            for other in runs.values():
                other.close()
            conn.close()
            selector.close()
            run_child(request, fds, engine)
        for fd in fds:
            os.close(fd)
        try:
            _send_message(conn, {"pid": pid})
        except OSError as exc:  # the client cannot know the run started: it must not go on
            os.kill(pid, signal.SIGKILL)
            conn.close()
            print(
                f"warmstart: run {request['env'].get(RUN_ENV, '?')} killed as {pid}: its client "
                f"could not be told ({exc})",
                flush=True,
            )
            return
        runs[pid] = conn
        print(f"warmstart: run {request['env'].get(RUN_ENV, '?')} started as {pid}", flush=True)
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ, pid)

    def reap() -> None:
        # every child that ended, not only those with a client: a run killed because its client
        # could not be told its PID is in no list, and would stay a zombie until the server ends
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = runs.pop(pid, None)
            if conn is None:
                continue
            selector.unregister(conn)
            conn.setblocking(True)
            print(f"warmstart: {pid} exited ({_exit_status(status)})", flush=True)
            with contextlib.suppress(OSError):
                _send_message(conn, {"exit": _exit_status(status)})
            conn.close()

    try:
        while not stopping:
            for key, _ in selector.select(timeout=1.0):
                if key.data == "accept":
                    accept()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                else:  # a client spoke or went away: only a dead client closes its end
                    conn = key.fileobj
                    assert isinstance(conn, socket.socket)
                    try:
                        gone = conn.recv(1) == b""
                    except BlockingIOError:
                        gone = False
                    except OSError:
                        gone = True
                    if gone:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(key.data, signal.SIGKILL)
            reap()
            if stale and not runs:
                print(f"warmstart: code changed ({stale[0]}, ...); restarting", flush=True)
                listener.close()
                path.unlink(missing_ok=True)
                os.execv(
                    sys.executable, [sys.executable, "-m", "driftloop.warmstart", *sys.argv[1:]]
                )
    finally:
        for pid in runs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        path.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        import argparse

        parser = argparse.ArgumentParser(prog="python -m driftloop.warmstart serve")
        parser.add_argument("--socket", type=Path, required=True)
        parser.add_argument("--root", type=Path, default=None)
        parser.add_argument(
            "--preload", nargs="*", default=None, help="modules to import (default: PRELOAD)"
        )
        parser.add_argument("--engine", default=ENGINE, help="the module a run runs as __main__")
        opts = parser.parse_args(args[1:])
        serve(
            opts.socket,
            modules=PRELOAD if opts.preload is None else opts.preload,
            root=opts.root,
            engine=opts.engine,
        )
        return 0
    return client(args)


if __name__ == "__main__":
    sys.exit(main())
