"""Progress for long loops: a tqdm bar on a terminal, a few plain lines anywhere else.

Written to a file or a CI log, a tqdm bar is one endless line of carriage returns; there
:class:`PlainProgress` prints a line at every tenth of the work (and at least once a
minute), then one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm


class PlainProgress:
    """The parts of tqdm's interface the loops use, as occasional plain lines."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "img",
        initial: int = 0,
        stream: TextIO | None = None,
        every_s: float = 60.0,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start_n = initial
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self._start = self._last = time.perf_counter()
        self._next_tenth = (initial * 10 // total + 1) if total else 10
        self._closed = False

    def _line(self, final: bool = False) -> str:
        elapsed = time.perf_counter() - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: {self.n}/{self.total} {self.unit}"
        if self.total:
            head += f" ({100 * self.n / self.total:.0f} %)"
        if final:
            return f"{head} in {elapsed:.0f} s, {rate:.1f} {self.unit}/s"
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        return f"{head}, {rate:.1f} {self.unit}/s, ETA {eta:.0f} s"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        tenth = self.n * 10 // self.total if self.total else 0
        if (self.total and tenth >= self._next_tenth and self.n < self.total) or (
            now - self._last >= self.every_s
        ):
            self._next_tenth = tenth + 1
            self._last = now
            self.write(self._line())

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Accepted and ignored: postfixes belong to the live bar."""

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n > self._start_n:
                self.write(self._line(final=True))


def progress_bar(
    total: int, desc: str, *, unit: str = "img", enabled: bool = True, initial: int = 0
) -> tqdm | PlainProgress:
    """A bar on a terminal, plain lines elsewhere, nothing when not ``enabled``."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True)
    return PlainProgress(total, desc, unit, initial)
