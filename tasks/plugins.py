"""Resolving the ``"package.module:function"`` references a use case makes (its feature builder,
its model estimator) to the functions they name, with errors that say which field failed."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def load_function(dotted: str, field: str) -> Callable[..., Any]:
    """Resolve ``"package.module:function"`` to the function; ``field`` names the reference in
    errors (``"feature builder"``, ``"model.estimator"``). Raises ValueError when the reference
    is malformed, its module does not import or it has no such function."""
    module_name, sep, attr = dotted.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{field} {dotted!r} must look like 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # also a module that fails while it runs (SyntaxError, ...)
        raise ValueError(f"{field} {dotted!r}: {_import_failure(module_name, exc)}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{field} {dotted!r}: {module_name} has no function {attr!r}")
    return fn


def _import_failure(module_name: str, exc: Exception) -> str:
    """Why ``module_name`` did not import, naming the module that failed: the reference's own
    (absent: not installed, or its folder not on ``sys.path``/PYTHONPATH) or one it imports."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        if module_name == exc.name or module_name.startswith(exc.name + "."):
            return (
                f"cannot import {module_name}: no module named {exc.name!r} (not installed, or "
                "its folder is not on sys.path: add it to PYTHONPATH)"
            )
        return (
            f"cannot import {module_name}: it imports {exc.name!r}, which is not installed "
            "or not on sys.path"
        )
    return f"cannot import {module_name}: {type(exc).__name__}: {exc}"
