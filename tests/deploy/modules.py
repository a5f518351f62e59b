"""Load the plain scripts of deploy/ (not a package) as modules for the tests."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from driftloop_config.settings import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"


def load(relative: str) -> ModuleType:
    """Import ``deploy/<relative>`` under a private module name (once)."""
    name = "driftloop_deploy_" + relative.removesuffix(".py").replace("/", "_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DEPLOY / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module
