"""The defaults of the API functions the commands wrap, read from the functions' own signatures.

A default is defined once, in the signature of the function that uses it (``audit_run(...,
steps=20)``), and the command's option shows and passes that value. The signatures are read from
the source with :mod:`ast` rather than by importing the functions, which would import torch
before every command (seconds on a small machine, even to refuse a typo); a test checks that
what is read here is what :func:`inspect.signature` gives.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parents[1]


def signature_defaults(module: str, function: str) -> dict[str, Any]:
    """``{argument: default}`` of ``function`` in the octlens ``module`` (``"audit.pipeline"``).
    Every default of a wrapped function is a literal; one that is not fails here, at import,
    and in the test that holds these equal to the signature."""
    source = (_PACKAGE / Path(*module.split("."))).with_suffix(".py").read_text(encoding="utf-8")
    definition = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name == function
    )
    arguments = definition.args
    with_default = arguments.args[len(arguments.args) - len(arguments.defaults) :]
    pairs = [
        *zip(with_default, arguments.defaults, strict=True),
        *zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True),
    ]
    return {
        argument.arg: ast.literal_eval(default)
        for argument, default in pairs
        if default is not None
    }


AUDIT = signature_defaults("audit.pipeline", "audit_run")
EVALUATE = signature_defaults("evaluate.runner", "evaluate_run")
EXPLAIN = signature_defaults("explain.runner", "explain_images")
REPORT = signature_defaults("report.html", "write_report")
