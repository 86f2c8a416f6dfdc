"""One progress display for every long loop: a tqdm bar on a terminal, short log lines anywhere else.

Every progress bar of the harness (image cache, feature extraction, pretraining steps, the
synthetic world, waiting for jobs) comes from ``progress(...)``. On a terminal (the stream,
stderr by default, is a TTY) that is a tqdm bar redrawn in place. Anywhere else (a Slurm log
file, CI, a pipe) redrawing in place means hundreds of carriage-return updates in the file, so
the same calls write plain lines instead::

    features (global): 4096/12000 img (34 %), 812.3 img/s, ETA 10s
    features (global): 12000/12000 img, done in 14s (834.1 img/s)

A line is written when at least ``MIN_INTERVAL_S`` (10 s) have passed since the last one AND
the count has moved by ``STEP_FRACTION`` (10 %) of the total since then, whichever comes
later, so a fast loop writes no more than about ten lines and a slow one no more than one per
10 s; a loop that moves less than 10 % in ``HEARTBEAT_S`` (60 s) still writes one line then,
so a log shows it is alive. Closing writes one final line (``done in ...``, or ``stopped at
...`` when the loop ended early). No line contains a carriage return.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

MIN_INTERVAL_S = 10.0
STEP_FRACTION = 0.1
HEARTBEAT_S = 60.0


class Progress(Protocol):
    """What every progress display offers (a tqdm bar has the same methods)."""

    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, **kwargs: Any) -> Any: ...

    def close(self) -> Any: ...

    def __enter__(self) -> Progress: ...

    def __exit__(self, *exc: object) -> Any: ...


def progress(total: int | None, desc: str, *, unit: str = "it", initial: int = 0, enabled: bool = True,
             leave: bool = True, file: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
             min_interval_s: float = MIN_INTERVAL_S, step_fraction: float = STEP_FRACTION,
             heartbeat_s: float = HEARTBEAT_S) -> Progress:
    """A progress display for ``total`` units of work (see the module docstring).

    Args:
        total: units of work (None when unknown: lines then say only the count and rate).
        desc: what is being done (the line's prefix).
        unit: the unit's name (``img``, ``step``, ``job``).
        initial: units already done (a resumed loop).
        enabled: False: a display that shows nothing (``--quiet``, worker processes).
        leave: keep the tqdm bar on the terminal when closed (lines are always kept).
        file: the stream; default ``sys.stderr`` at call time.
        clock: seconds, monotonic (the line pacing reads it).
        min_interval_s: at most one line per this many seconds.
        step_fraction: and only once the count has moved by this fraction of the total ...
        heartbeat_s: ... or this many seconds have passed since the last line.

    Returns:
        An object with ``update(n)``, ``set_postfix(**kw)``, ``close()`` that is also a context manager.
    """
    stream = sys.stderr if file is None else file
    if not enabled:
        return _Silent()
    if _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=stream)
    return LineProgress(total, desc, unit=unit, initial=initial, file=stream, clock=clock,
                        min_interval_s=min_interval_s, step_fraction=step_fraction, heartbeat_s=heartbeat_s)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class _Silent:
    """The display of a disabled progress: it counts nothing and writes nothing."""

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class LineProgress:
    """Progress as short, complete log lines (see the module docstring); never a carriage return."""

    def __init__(self, total: int | None, desc: str, *, unit: str = "it", initial: int = 0,
                 file: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 min_interval_s: float = MIN_INTERVAL_S, step_fraction: float = STEP_FRACTION,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start = self._last_n = initial
        self.file = sys.stderr if file is None else file
        self._clock = clock
        self._t0 = self._last_t = clock()
        self._min, self._heartbeat = min_interval_s, heartbeat_s
        self._step = max(1.0, step_fraction * total) if total else float("inf")
        self._postfix = ""
        self._closed = False
        self.lines = 0  # lines written so far (the final one included)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; write a line when the pacing allows one."""
        self.n += n
        now = self._clock()
        since = now - self._last_t
        if since < self._min or (self.total and self.n >= self.total):  # the final line says the end
            return
        if self.n - self._last_n >= self._step or since >= self._heartbeat:
            self._write(self._line(now))
            self._last_t, self._last_n = now, self.n

    def set_postfix(self, **kwargs: Any) -> None:
        """Extra ``key=value`` fields at the end of the next lines (e.g. ``loss=0.4121``)."""
        self._postfix = "".join(f", {k}={v}" for k, v in kwargs.items())

    def close(self) -> None:
        """Write the final line (once)."""
        if self._closed:
            return
        self._closed = True
        now = self._clock()
        elapsed = now - self._t0
        rate = self._rate(now)
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        if self.total and self.n < self.total:
            self._write(f"{self.desc}: stopped at {count} {self.unit} after {_duration(elapsed)}{self._postfix}")
        else:
            self._write(f"{self.desc}: {count} {self.unit}, done in {_duration(elapsed)} "
                        f"({rate:.1f} {self.unit}/s){self._postfix}")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rate(self, now: float) -> float:
        return (self.n - self._start) / max(now - self._t0, 1e-9)

    def _line(self, now: float) -> str:
        rate = self._rate(now)
        if not self.total:
            return f"{self.desc}: {self.n} {self.unit}, {rate:.1f} {self.unit}/s{self._postfix}"
        eta = _duration((self.total - self.n) / rate) if rate > 0 else "?"
        return (f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f} %), "
                f"{rate:.1f} {self.unit}/s, ETA {eta}{self._postfix}")

    def _write(self, line: str) -> None:
        # one complete line per write, flushed: log files and pipes get whole lines, even when killed
        self.file.write(line.replace("\r", " ") + "\n")
        self.file.flush()
        self.lines += 1
