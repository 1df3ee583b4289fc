"""The package follows the pipeline: no module imports a stage further down it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "octlens"
# Shared by every stage: errors, atomic files, the precision plan, progress bars, plotting helpers.
SHARED = {"errors", "files", "runtime", "progress", "viz", "__init__"}
ORDER = [
    "data",
    "models",
    "training",
    "explain",
    "audit",
    "evaluate",
    "report",
    "app",
    "demo",
    "cli",
    "__main__",
]


def _stage(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_no_module_imports_up_the_pipeline():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        stage = _stage(".".join(relative.parts))
        stage = stage.removesuffix(".py")
        allowed = set(SHARED) if stage in SHARED else SHARED | set(ORDER[: ORDER.index(stage) + 1])
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("octlens.")
            ):
                target = _stage(node.module)
                if target not in allowed:
                    wrong.append(f"{relative}: imports {node.module}")
    assert not wrong, "\n".join(wrong)


def test_viz_imports_nothing_else_from_octlens():
    for path in (PACKAGE / "viz").rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        ]
        assert all(not m.startswith("octlens.") or m.startswith("octlens.viz") for m in imported)
