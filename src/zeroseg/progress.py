"""Progress that a person can read, on a terminal and in a log file alike.

On a terminal: a tqdm bar. Anywhere else (CI, ``nohup``, a redirected log): no carriage-return
updates at all, but one plain line every ``every_s`` seconds or ``every_pct`` percent, whichever
comes first, and one at the end:

    synth: 1200/3900 (31%) 8.1 s, 148.2 img/s, ~18 s left
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

__all__ = ["progress", "LineProgress"]


class LineProgress:
    """The subset of tqdm's interface zeroseg uses, printing whole lines at a bounded rate."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, file: TextIO | None = None, every_s: float = 30.0,
                 every_pct: float = 10.0, **_ignored: Any):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n = total, desc, unit, int(initial)
        self.file = file or sys.stderr
        self.every_s, self.every_pct = float(every_s), float(every_pct)
        self.start = self.last_time = time.perf_counter()
        self.last_pct = self._pct()
        self.postfix = ""
        self.closed = False

    def _pct(self) -> float:
        return 100.0 * self.n / self.total if self.total else 0.0

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.perf_counter()
        if now - self.last_time >= self.every_s or self._pct() - self.last_pct >= self.every_pct:
            self._line(now)

    def line(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total} ({self._pct():.0f}%)" if self.total else f"{self.n}"
        text = f"{self.desc}: {done} {elapsed:.1f} s, {rate:.1f} {self.unit}/s"
        if self.total and rate > 0 and self.n < self.total:
            text += f", ~{(self.total - self.n) / rate:.0f} s left"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _line(self, now: float) -> None:
        print(self.line(now), file=self.file, flush=True)
        self.last_time, self.last_pct = now, self._pct()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n != 0 and (self.total is None or self.last_pct < 100.0):
                self._line(time.perf_counter())


def progress(iterable: Iterable | None = None, *, disable: bool = False, file: TextIO | None = None,
             **kwargs: Any):
    """A tqdm bar on a terminal, ``LineProgress`` elsewhere; a plain pass-through when ``disable``."""
    file = file or sys.stderr
    if disable:
        return iterable if iterable is not None else _NullProgress()
    if getattr(file, "isatty", lambda: False)():
        from tqdm import tqdm  # heavy

        return tqdm(iterable, file=file, **kwargs)
    return LineProgress(iterable, file=file, **kwargs)


class _NullProgress:
    def __enter__(self) -> "_NullProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass
