"""Progress for people: a bar on a terminal, plain lines in a log file. A bar redrawn into a
redirected stderr fills it with cursor codes (hundreds of KB for the default benchmark), so when
stderr is not a terminal each step is one line instead."""

from __future__ import annotations

import sys
import time
from typing import Any


def interactive() -> bool:
    return sys.stderr.isatty()


def progress(total: int | None, desc: str, unit: str, show: bool = True, **bar_options: Any):
    """A tqdm bar on a terminal; otherwise ``Lines`` (same calls); nothing when ``show`` is false."""
    if show and not interactive():
        return Lines(total, desc, unit)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not show, **bar_options)


class Lines:
    """The calls of a tqdm bar that clbench uses, written as one line per step."""

    def __init__(self, total: int | None, desc: str, unit: str):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.start = time.monotonic()
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        of = f"/{self.total}" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}s ({time.monotonic() - self.start:.0f} s{extra})",
              file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        pass


def write(line: str) -> None:
    """A message that must not break a bar (tqdm.write on a terminal, a plain line otherwise)."""
    if interactive():
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)
