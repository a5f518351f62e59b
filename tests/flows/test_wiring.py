"""Flows only wire: the decisions live in ``tasks/`` (plain functions with their own tests), so
each flow module holds at most a few lines of logic, starts from the one shared run context,
and no stage is wrapped as a Prefect task twice."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FLOWS = Path(__file__).resolve().parents[2] / "flows"
#: nodes that decide or compute (calls, loops over tasks and plain comprehensions are wiring)
LOGIC = (
    ast.If,
    ast.IfExp,
    ast.While,
    ast.Try,
    ast.Match,
    ast.BoolOp,
    ast.Compare,
    ast.BinOp,
    ast.AugAssign,
    ast.Break,
    ast.Continue,
)
MAX_LOGIC_LINES = 5


def flow_modules() -> list[Path]:
    """The modules that define a ``@flow`` (the others are the flows' shared plumbing)."""
    return sorted(p for p in FLOWS.glob("*.py") if "@flow(" in p.read_text())


def logic_lines(source: str) -> list[int]:
    """The lines of the module's functions that hold a decision or a computation."""
    lines: set[int] = set()
    for fn in (n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(fn):
            if isinstance(node, LOGIC):
                lines.add(node.lineno)
            elif isinstance(node, ast.comprehension) and node.ifs:
                lines.add(node.ifs[0].lineno)
    return sorted(lines)


def test_the_counter_sees_decisions_and_not_wiring() -> None:
    wiring = "def f(ctx):\n    x = step(ctx)\n    for y in x:\n        other(y)\n    return [z(y) for y in x]\n"
    assert logic_lines(wiring) == []
    deciding = (
        "def f(ctx):\n"
        "    day = ctx.day or newest()\n"  # 2
        "    if day is None:\n"  # 3
        "        return None\n"
        "    return [y for y in day if y > 1]\n"  # 5
    )
    assert logic_lines(deciding) == [2, 3, 5]


def test_every_flow_module_is_found() -> None:
    assert [p.stem for p in flow_modules()] == [
        "drift",
        "features",
        "ingest",
        "reconcile",
        "score",
        "train",
    ]


@pytest.mark.parametrize("module", flow_modules(), ids=lambda p: p.stem)
def test_a_flow_module_holds_at_most_five_lines_of_logic(module: Path) -> None:
    lines = logic_lines(module.read_text())
    assert len(lines) <= MAX_LOGIC_LINES, f"{module.name}: logic on lines {lines}"


@pytest.mark.parametrize("module", flow_modules(), ids=lambda p: p.stem)
def test_a_flow_starts_from_the_shared_run_context(module: Path) -> None:
    source = module.read_text()
    assert "RunContext.load()" in source
    assert "load_settings(" not in source and "load_usecase(" not in source


def test_no_stage_is_wrapped_as_a_task_twice() -> None:
    wrapped: dict[str, str] = {}
    for module in sorted(FLOWS.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            # name = task(...)(stage.function)
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Call)
                and isinstance(node.func.func, ast.Name)
                and node.func.func.id == "task"
            ):
                target = ast.unparse(node.args[0])
                stage = target.rsplit(".", 1)[-1]
                assert stage not in wrapped, (
                    f"{stage}: wrapped in {wrapped[stage]} and {module.name}"
                )
                wrapped[stage] = module.name
    # the stages more than one flow runs are wrapped once, in the flows' shared module
    shared = {name: wrapped[name] for name in ("feature_store", "current_state", "sweep_debris")}
    assert shared == dict.fromkeys(shared, "shared.py")
