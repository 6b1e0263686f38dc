"""One exception type for every problem a user can fix (bad file, bad option, wrong model).

The CLI prints ``str(error)`` as a single line and exits with code 2; the Slicer module shows
the same text.  Keeping the message format in one place guarantees "file: problem" everywhere.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A problem with the user's input, reported as ``<source>: <problem>``."""

    def __init__(self, source: str | Path | None, problem: str):
        self.source = str(source) if source is not None else None
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class CancelledError(RuntimeError):
    """Raised inside long work when the user's cancellation token was set."""
