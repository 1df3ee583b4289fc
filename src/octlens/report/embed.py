"""Embedding figures in HTML, so a report is one file that opens anywhere."""

from __future__ import annotations

import base64
import html
from pathlib import Path


def figure_html(title: str, path: Path) -> str:
    """A heading and the PNG at ``path`` inlined as a data URI."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f"<h3>{html.escape(title)}</h3><img src='data:image/png;base64,{encoded}'>"


def number(value: object) -> str:
    """A metric to 3 decimals, ``-`` for none; anything that is not a number (an edited file)
    is shown as escaped text, never formatted as if it were one."""
    if value is None:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.3f}"
    return text(value)


def text(value: object) -> str:
    """Any value from a file, escaped for HTML."""
    return html.escape(str(value))
