"""A tqdm progress bar driven by the library's ``progress(fraction, stage)`` callbacks."""

from __future__ import annotations

import sys

from tqdm import tqdm


class TqdmProgress:
    """Context manager usable as a ``progress`` callback; draws on stderr only when it is a terminal
    (or when forced), so logs and tests stay clean."""

    def __init__(self, force: bool | None = None):
        self.enabled = sys.stderr.isatty() if force is None else force
        self.bar: tqdm | None = None

    def __enter__(self) -> TqdmProgress:
        if self.enabled:
            self.bar = tqdm(total=100, unit="%", file=sys.stderr, leave=False, bar_format="{l_bar}{bar}| {elapsed}")
        return self

    def __call__(self, fraction: float, stage: str) -> None:
        if self.bar is not None:
            self.bar.set_description(stage)
            self.bar.n = round(100 * min(max(fraction, 0.0), 1.0))
            self.bar.refresh()

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
