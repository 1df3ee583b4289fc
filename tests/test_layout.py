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
    "evaluate",
    "explain",
    "audit",
    "report",
    "app",
    "demo",
    "cli",
    "__main__",
]


def _stage(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def _module_name(path: Path) -> str:
    """``octlens.audit.pipeline`` for ``src/octlens/audit/pipeline.py`` (a package's
    ``__init__.py`` is the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_octlens_modules(path: Path, source: str) -> list[str]:
    """Every octlens module ``source`` (the file at ``path``) imports, in any of Python's
    spellings: ``from octlens.x import y``, ``import octlens.x``, ``from octlens import x``
    and relative imports (``from ..x import y``, ``from . import x``)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module == "octlens" or (node.level and not node.module):
                # a name that is not a submodule (``from octlens import __version__``) is the
                # package's own attribute
                found += [
                    f"{module}.{alias.name}" if _is_module(module, alias.name) else module
                    for alias in node.names
                ]
            else:
                found.append(module)
    return [name for name in found if name == "octlens" or name.startswith("octlens.")]


def _is_module(package: str, name: str) -> bool:
    folder = PACKAGE.parent.joinpath(*package.split("."), name)
    return folder.is_dir() or folder.with_suffix(".py").is_file()


def _imports(path: Path) -> list[str]:
    return imported_octlens_modules(path, path.read_text())


def test_the_import_reader_sees_every_spelling():
    here = PACKAGE / "audit" / "pipeline.py"
    source = "\n".join(
        [
            "import numpy",
            "import octlens.report.html",
            "from octlens import app",
            "from octlens import __version__",
            "from octlens.cli import main",
            "from .evidence import x",
            "from . import shortcut",
            "from ..demo import y",
        ]
    )
    assert imported_octlens_modules(here, source) == [
        "octlens.report.html",
        "octlens.app",
        "octlens",
        "octlens.cli",
        "octlens.audit.evidence",
        "octlens.audit.shortcut",
        "octlens.demo",
    ]
    package = PACKAGE / "audit" / "__init__.py"
    assert imported_octlens_modules(package, "from .result import R") == ["octlens.audit.result"]


def test_no_module_imports_up_the_pipeline():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        stage = _stage(_module_name(path)) if path.parent != PACKAGE else path.stem
        allowed = set(SHARED) if stage in SHARED else SHARED | set(ORDER[: ORDER.index(stage) + 1])
        wrong += [
            f"{path.relative_to(PACKAGE.parent)}: imports {module}"
            for module in _imports(path)
            if _stage(module) not in allowed
        ]
    assert not wrong, "\n".join(wrong)


def test_viz_imports_nothing_else_from_octlens():
    for path in (PACKAGE / "viz").rglob("*.py"):
        assert all(module.startswith("octlens.viz") for module in _imports(path)), path


def test_reading_data_does_not_load_the_confound_scan_s_libraries():
    """``import octlens.data`` (every command does) leaves scikit-learn and matplotlib to the
    confound scan, which loads them when asked for."""
    import subprocess
    import sys

    script = (
        "import sys, octlens.data; print('sklearn' in sys.modules, 'matplotlib' in sys.modules); "
        "from octlens.data import confound_scan; print(confound_scan.__name__, "
        "'sklearn' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "confound_scan", "True"]
