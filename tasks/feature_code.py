"""What a feature build's fingerprint knows of the builder's code.

:func:`load_builder` resolves a use case's ``features.builder`` (``"package.module:function"``);
:func:`builder_code` hashes the source of every module of the project whose code that builder
runs (its own module and those it reaches through module globals). :mod:`tasks.features` puts
the hashes in its manifest, so a change of the builder's code rebuilds every feature day.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import sys
import sysconfig
from collections.abc import Callable
from contextlib import suppress
from datetime import date
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import pandas as pd

from tasks.plugins import load_function


def load_builder(dotted: str) -> Callable[[pd.DataFrame, date, date], pd.DataFrame]:
    """Resolve ``"package.module:function"`` to the function."""
    return load_function(dotted, "feature builder")


def builder_code(dotted: str) -> dict[str, str]:
    """SHA-256 of the source of every module whose code the feature builder ``dotted`` runs,
    by module name: the module it is named in, and those of the functions and classes it
    reaches through module globals, transitively (``examples._grid`` for the example builders).
    Modules of the standard library and of installed packages (pandas, numpy) are left out,
    except those of the builder's own top-level package (a builder installed as a package).

    The source is read from the files, as a fresh process imports them: a process that imported
    the builder before its file changed runs the old code (flow runs are fresh processes; a
    long-lived Dask worker must be restarted after a deploy, as for any code change).
    """
    builder = load_builder(dotted)
    named = importlib.import_module(dotted.partition(":")[0])
    package = named.__name__.split(".", 1)[0]
    modules = {named.__name__: named, **_reached_modules(builder, package)}
    return {name: _source_digest(modules[name]) for name in sorted(modules)}


def _reached_modules(start: Any, package: str) -> dict[str, ModuleType]:
    """The modules (ours: see :func:`builder_code`) of the functions and classes ``start``
    reaches through the globals its code names, transitively."""
    found: dict[str, ModuleType] = {}
    seen: set[int] = set()
    todo = [start]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            todo.append(obj.func)
            continue
        if isinstance(obj, ModuleType):
            if _ours(obj, package):
                found[obj.__name__] = obj
            continue
        if inspect.isclass(obj):
            module = sys.modules.get(obj.__module__)
            if module is not None and _ours(module, package):
                found[module.__name__] = module
                for member in vars(obj).values():
                    if isinstance(member, staticmethod | classmethod):
                        member = member.__func__
                    if isinstance(member, property):
                        todo += [f for f in (member.fget, member.fset, member.fdel) if f]
                    elif inspect.isfunction(member):
                        todo.append(member)
            continue
        if not callable(obj):
            continue  # a constant: its module's source covers it
        try:
            func = inspect.unwrap(obj)
        except ValueError:  # a cycle of __wrapped__
            func = obj
        if not inspect.isfunction(func):
            todo.append(type(obj))  # a callable object: its class's methods
            continue
        module = sys.modules.get(func.__module__)
        if module is None or not _ours(module, package):
            continue
        found[module.__name__] = module
        for name in _global_names(func.__code__):
            if name in func.__globals__:
                todo.append(func.__globals__[name])
    return found


def _global_names(code: CodeType) -> set[str]:
    """The names a code object (and the functions, lambdas and comprehensions in it) looks up;
    attribute names among them are harmless (a global of that name only adds its module)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _global_names(const)
    return names


def _ours(module: ModuleType, package: str) -> bool:
    """Whether a module's source is part of what a builder runs: the builder's package, or a
    file outside the standard library and the installed packages (the project's own)."""
    name = module.__name__
    if name == package or name.startswith(package + "."):
        return True
    file = getattr(module, "__file__", None)
    if not file:
        return False  # built in, or a namespace package
    path = Path(file).resolve()
    return not any(path.is_relative_to(lib) for lib in _library_dirs())


@functools.cache
def _library_dirs() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple({Path(paths[k]).resolve() for k in keys if k in paths})


def _source_digest(module: ModuleType) -> str:
    """SHA-256 of a module's source file as it is now (read anew, not a cached copy), else of
    the source its loader gives, else of its compiled file, else of its name."""
    file = getattr(module, "__file__", None) or ""

    def read(path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError:
            return b""

    source = read(file) if file.endswith(".py") else b""
    if not source:
        with suppress(OSError, TypeError):
            source = inspect.getsource(module).encode("utf-8")
    if not source and file:
        source = read(file)
    return hashlib.sha256(source or f"<no source: {module.__name__}>".encode()).hexdigest()
