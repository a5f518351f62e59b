"""P10: wall time of a CLI command with nothing to do (``driftloop ingest`` on an empty lake), as a
user runs it: a new process, no ``PREFECT_API_URL``.

* first: the command starts the local Prefect API server of the state folder (driftloop.localapi);
* reuse: the next commands find it running (median of ``--repeat`` runs);
* ephemeral: the same flow in a new process without any API, as every command ran before:
  Prefect starts a temporary server inside the process (``--no-ephemeral`` skips it; when its
  start-up times out, as it does under load, the time until the failure and the error are
  reported);
* stack: with a running stack (``driftloop up``), whose API the command uses (``--stack``; the
  stack takes minutes to start, so it is off by default).

Ratios: reuse ÷ first, reuse ÷ ephemeral, stack ÷ first. Every server started is stopped by PID.

    .venv/bin/python bench/cli_api.py [--repeat 3] [--no-ephemeral] [--stack]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftloop_config.settings import PROJECT_ROOT, TELEMETRY_OFF

EPHEMERAL = "from flows.ingest import ingest_flow; ingest_flow()"


def log(message: str) -> None:
    print(message, flush=True)


def timed(argv: list[str], env: dict[str, str], *, may_fail: bool = False) -> tuple[float, str]:
    """Seconds the command took, and its last error line when it failed (``may_fail``)."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode and not may_fail:
        raise SystemExit(f"{' '.join(argv[1:])} failed:\n{done.stdout}\n{done.stderr}")
    errors = [ln for ln in done.stderr.splitlines() if "Error" in ln]
    return took, (errors[-1] if done.returncode and errors else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="reuse runs (median)")
    parser.add_argument("--no-ephemeral", action="store_true", help="skip the ephemeral run")
    parser.add_argument("--stack", action="store_true", help="also time it with `driftloop up`")
    args = parser.parse_args()
    load_start = os.getloadavg()
    cli = [sys.executable, "-m", "driftloop.cli", "ingest"]
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as tmp:
        work = Path(tmp)
        (work / "lake").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
        env.pop("PREFECT_API_URL", None)
        env.update(TELEMETRY_OFF)
        env.update(
            {
                "DRIFTLOOP_DATA_ROOT": str(work / "lake"),
                "DRIFTLOOP_STATE_DIR": str(work / "state"),
                "PREFECT_HOME": str(work / "prefect-home"),
            }
        )
        os.environ.update({k: env[k] for k in ("DRIFTLOOP_DATA_ROOT", "DRIFTLOOP_STATE_DIR")})
        from driftloop.localapi import read_server, stop_server
        from driftloop_config.settings import load_settings

        settings = load_settings()
        result: dict[str, Any] = {"command": "driftloop ingest (empty lake)"}
        try:
            result["first_s"] = round(timed(cli, env)[0], 2)
            server = read_server(settings)
            assert server is not None, "the first command recorded no server"
            log(f"first (starts the local API server, pid {server.proc.pid}): {result['first_s']}s")
            reuse = [timed(cli, env)[0] for _ in range(args.repeat)]
            again = read_server(settings)
            assert again is not None and again.proc == server.proc, "the server was not reused"
            result["reuse_s"] = round(statistics.median(reuse), 2)
            result["reuse_runs_s"] = [round(t, 2) for t in reuse]
            log(f"reuse (median of {args.repeat}): {result['reuse_s']}s {result['reuse_runs_s']}")
        finally:
            stopped = stop_server(settings)
            if stopped is not None:
                log(f"local API server stopped (pid {stopped.pid})")
        if not args.no_ephemeral:
            took, error = timed([sys.executable, "-c", EPHEMERAL], env, may_fail=True)
            result["ephemeral_s"] = round(took, 2)
            if error:  # e.g. the temporary server's start-up timed out: that is the figure
                result["ephemeral_error"] = error
            log(f"ephemeral (no API, as before): {result['ephemeral_s']}s {error}")
        if args.stack:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from benchstack import running_stack

            with running_stack(settings):
                result["stack_s"] = round(timed(cli, env)[0], 2)
            log(f"with the stack running: {result['stack_s']}s")
    result["ratio_reuse_first"] = round(result["reuse_s"] / result["first_s"], 3)
    if "ephemeral_s" in result:
        result["ratio_reuse_ephemeral"] = round(result["reuse_s"] / result["ephemeral_s"], 3)
    if "stack_s" in result:
        result["ratio_stack_first"] = round(result["stack_s"] / result["first_s"], 3)
    result["load_avg_start"] = load_start
    result["load_avg"] = os.getloadavg()
    log(
        f"reuse ÷ first = {result['ratio_reuse_first']}x"
        + (
            f"; reuse ÷ ephemeral = {result['ratio_reuse_ephemeral']}x"
            if "ratio_reuse_ephemeral" in result
            else ""
        )
        + (f"; stack ÷ first = {result['ratio_stack_first']}x" if "stack_s" in result else "")
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
