"""Embedding figures in HTML, so a report is one file that opens anywhere."""

from __future__ import annotations

import base64
import html
from pathlib import Path


def figure_html(title: str, path: Path) -> str:
    """A heading and the PNG at ``path`` inlined as a data URI."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f"<h3>{html.escape(title)}</h3><img src='data:image/png;base64,{encoded}'>"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
