"""Progress output that suits where it goes: a tqdm bar on a terminal, sparse plain lines in a log.

tqdm redraws its bar with carriage returns, which a terminal overwrites but a log file keeps: a log of a
long run would hold megabytes of frames. :func:`progress_bar` therefore returns a tqdm bar only when the
stream is a TTY. Otherwise it returns a :class:`LineProgress`, which writes one plain line each time
another 10 % of the total is done or 60 s have passed since its last line, whichever comes first, and a
last line when it closes. Both have the same small interface: ``update(n)``, ``set_postfix_str(s)`` and
``close()``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

#: a non-TTY bar writes a line at least every this fraction of the total ...
LINE_FRACTION = 0.10
#: ... or every this many seconds, whichever comes first
LINE_SECONDS = 60.0


def is_tty(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (``False`` for files, pipes and odd objects)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class NullProgress:
    """A bar that prints nothing (``enabled=False``)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """Plain progress lines for logs: one per 10 % of ``total`` or per 60 s, and one at the end.

    Args:
        total: the count that means done (e.g. iterations). ``initial``: where a resumed run starts.
        desc: the label that starts every line. ``unit``: what is counted (``"it"``, ``"patch"``).
        stream: where lines go (default ``sys.stderr``, as tqdm). ``clock``: seconds, for tests.
    """

    def __init__(self, total: int, *, desc: str = "", unit: str = "it", initial: int = 0,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self.start = int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.t0 = self.last_time = clock()
        self.step = max(1, int(round(self.total * LINE_FRACTION)))
        self.next_n = self._next_milestone(self.n)
        self.postfix = ""
        self.closed = False
        self.last_line_n: int | None = None

    def _next_milestone(self, n: int) -> int:
        return (n // self.step + 1) * self.step

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = self.clock()
        if self.n >= self.next_n or now - self.last_time >= LINE_SECONDS:
            self._line(now)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.last_line_n != self.n:
                self._line(self.clock())

    def _line(self, now: float) -> None:
        elapsed = now - self.t0
        done = self.n - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.n / self.total if self.total else 100.0
        eta = f", ETA {_fmt(max(0, self.total - self.n) / rate)}" if rate > 0 and self.n < self.total else ""
        text = f"{self.desc}: {self.n}/{self.total} {self.unit} ({pct:.0f} %), {_fmt(elapsed)}{eta}"
        if rate > 0:
            text += f", {rate:.3g} {self.unit}/s"
        if self.postfix:
            text += f", {self.postfix}"
        self.stream.write(text + "\n")
        self.stream.flush()
        self.last_time, self.last_line_n = now, self.n
        self.next_n = self._next_milestone(self.n)


def _fmt(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_bar(total: int, *, desc: str = "", unit: str = "it", initial: int = 0, enabled: bool = True,
                 stream: TextIO | None = None, **tqdm_kwargs: Any) -> Any:
    """A progress bar for ``total`` steps: tqdm on a TTY, :class:`LineProgress` otherwise.

    Args:
        total, desc, unit, initial: as tqdm's. enabled: ``False`` gives a bar that prints nothing.
        stream: the output stream (default ``sys.stderr``). tqdm_kwargs: passed to tqdm only (e.g.
            ``leave``, ``dynamic_ncols``, ``smoothing``).
    """
    if not enabled:
        return NullProgress()
    out = stream if stream is not None else sys.stderr
    if is_tty(out):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=out, **tqdm_kwargs)
    return LineProgress(total, desc=desc, unit=unit, initial=initial, stream=out)
