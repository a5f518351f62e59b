"""A stand-in for ``prefect.engine`` in the warm-start tests: it reports where and how it runs.

``python -m tests.support.warm_engine <what> [arg]``, or forked by the warm-start server with
``--engine tests.support.warm_engine``: prints one JSON line (its parent, directory, arguments, the
``WARM_MARKER`` variable, whether :data:`PRELOADED` was imported before it ran) to stdout and
``to stderr`` to stderr, then ``exit N`` exits with N, ``wait`` prints ``waiting`` and sleeps until a
signal ends it (``trap``: SIGTERM prints ``got SIGTERM`` and exits 7).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

#: a module the tests' server preloads; a cold start has not imported it when this one runs
PRELOADED = "tests.support.warm_preloaded"


def main(argv: list[str]) -> int:
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "cwd": os.getcwd(),
                "argv": argv,
                "marker": os.environ.get("WARM_MARKER"),
                "preloaded": PRELOADED in sys.modules,
            }
        ),
        flush=True,
    )
    print("to stderr", file=sys.stderr, flush=True)
    what = argv[0] if argv else "exit"
    if what == "exit":
        return int(argv[1]) if len(argv) > 1 else 0
    if what == "trap":

        def on_term(signum: int, _frame: object) -> None:
            print("got SIGTERM", flush=True)
            sys.exit(7)

        signal.signal(signal.SIGTERM, on_term)
    print("waiting", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.1)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
