"""The documentation's Python blocks run as written: each page's in order, from an empty folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.DOTALL | re.MULTILINE)


def run_blocks(page: Path, folder: Path, monkeypatch) -> dict[str, object]:
    monkeypatch.chdir(folder)
    namespace: dict[str, object] = {"__name__": "docs"}
    for number, block in enumerate(python_blocks(page), 1):
        name = f"{page.relative_to(ROOT)} python block {number}"
        exec(compile(block, name, "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_every_python_block_of_the_docs_runs(tmp_path, monkeypatch):
    pages = [page for page in PAGES if python_blocks(page)]
    assert ROOT / "docs" / "python-api.md" in pages
    for page in pages:
        folder = tmp_path / page.stem
        folder.mkdir()
        namespace = run_blocks(page, folder, monkeypatch)
        if page.name == "python-api.md":  # from training to an audit
            assert (folder / "runs" / "r18" / "audit" / "test" / "audit.json").is_file()
            assert namespace["maps"].shape == (4, 64, 64)  # type: ignore[attr-defined]


def test_the_readme_fits_on_a_screen_and_begins_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.DOTALL).group(1)  # type: ignore[union-attr]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["make demo", "make test"]


def test_every_link_of_the_readme_reaches_a_file():
    """The site's strict build checks the pages' links; the README is outside it."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert len(targets) >= 10
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).is_file()]
    assert missing == []
