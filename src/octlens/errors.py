"""The one exception type that reaches users: its message is a complete, one-line diagnosis."""


class OctlensError(Exception):
    """A problem with the user's input (a file, a folder, a checkpoint, an option).

    The CLI prints the message alone, without a traceback, so it must name the path and the
    problem, e.g. ``"data/train/CNV: class folder has no images"``.
    """


class Interrupted(OctlensError):
    """The user stopped a command (Ctrl-C); the message says what was kept and how to go on."""


def require_positive(**values: int | None) -> None:
    """One-line errors for counts that must be at least 1 (``None`` means "the default")."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise OctlensError(f"--{name.replace('_', '-')} {value}: must be at least 1")
