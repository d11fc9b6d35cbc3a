"""Progress of a sweep: done / ok / no data / infeasible / failed, rate and ETA.

On a terminal it is a tqdm bar; elsewhere (CI logs, a cluster job's log) one plain line every
``interval_s`` seconds, so logs stay readable; with ``bar=False`` (``--no-progress``) nothing at all.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO

from tqdm import tqdm


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Call :meth:`update` once per finished run, :meth:`close` at the end.

    ``bar``: None (default) a bar on a terminal, else a line every ``interval_s``; True a bar;
    False silent (the counts are still kept for the caller's closing line)."""

    def __init__(
        self, total: int, desc: str, *, bar: bool | None = None, interval_s: float = 30.0,
        file: TextIO | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.file = file or sys.stderr
        self.counts: Counter[str] = Counter()
        self.start = time.monotonic()
        self.interval_s = interval_s
        self._last_line = self.start
        self.silent = bar is False
        use_bar = self.file.isatty() if bar is None else bar
        self._bar = (
            tqdm(total=total, desc=desc, unit="run", file=self.file, smoothing=0.05, dynamic_ncols=True)
            if use_bar
            else None
        )

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def status_text(self) -> str:
        c = self.counts
        no_data = f", no data {c['no_data']}" if c["no_data"] else ""
        usual = ("ok", "no_data", "infeasible", "failed")
        others = "".join(f", {k} {n}" for k, n in sorted(c.items()) if k not in usual)
        return f"ok {c['ok']}{no_data}, infeasible {c['infeasible']}, failed {c['failed']}{others}"

    def update(self, status: str) -> None:
        self.counts[status] += 1
        if self._bar is not None:
            self._bar.set_postfix_str(self.status_text(), refresh=False)
            self._bar.update(1)
            return
        if self.silent:
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            print(self.line(), file=self.file, flush=True)

    def set_total(self, total: int) -> None:
        """A new total, for work whose size is known only as it goes (a capacity search)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = format_duration((self.total - self.done) / rate) if rate > 0 else "?"
        pct = 100 * self.done / self.total if self.total else 100
        return (
            f"{self.desc}: {self.done}/{self.total} runs ({pct:.0f}%; {self.status_text()}),"
            f" {rate:.1f} runs/s, ETA {eta}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
