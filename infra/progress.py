"""Progress of long Ray work that a person can watch: actors report, the driver draws it.

Ray actors cannot reach Prefect (and infra never imports it), so progress flows towards the
driver: an actor reports small records (item, done, loss...) to one ProgressBoard actor;
run_pool polls the board while it waits on results and hands the snapshot to a PoolProgress,
which draws one tqdm bar per bar name and calls a sink with (percent, description) - the tasks
layer turns that sink into a Prefect progress artifact.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

# Seconds between two reports of one item: a report is a Ray call, a training step is ~ms.
REPORT_EVERY_S = 0.5
# Seconds between two sink calls: each is a Prefect API request.
SINK_EVERY_S = 3.0

_board: Any = None
"""The ProgressBoard handle of the pool this actor's process belongs to (None: nobody listens)."""


class ProgressBoard:
    """Ray actor holding the latest report of every item; the driver reads snapshots of it."""

    def __init__(self) -> None:
        self.reports: dict[int, tuple[int, dict[str, float]]] = {}

    def report(self, item: int, done: int, info: dict[str, float]) -> None:
        """Record item's latest progress (cumulative, so a lost report loses nothing)."""
        self.reports[item] = (done, info)

    def snapshot(self) -> dict[int, tuple[int, dict[str, float]]]:
        """Every item's latest report."""
        return dict(self.reports)


def install_board(board: Any) -> None:
    """Route this process's report_progress calls to board (run in each pool actor)."""
    global _board
    _board = board


class ItemReporter:
    """An actor's reporter for one item: throttled, fire-and-forget, a no-op without a board."""

    def __init__(self, item: int, every_s: float = REPORT_EVERY_S) -> None:
        self.item, self.every_s, self.last = item, every_s, 0.0

    def due(self) -> bool:
        """Whether a report now would be sent (lets callers skip computing one, e.g. a GPU sync)."""
        return _board is not None and time.monotonic() - self.last >= self.every_s

    def send(self, done: int, **info: float) -> None:
        """Report done units of this item (cumulative) with extra numbers such as the loss."""
        if _board is None:
            return
        self.last = time.monotonic()
        _board.report.remote(self.item, int(done), {k: float(v) for k, v in info.items()})


def bars_enabled() -> bool | None:
    """tqdm's disable flag from SAEFLOW_PROGRESS: 1 forces bars, 0 hides them, unset draws them on a terminal."""
    value = os.environ.get("SAEFLOW_PROGRESS", "")
    return {"1": False, "0": True}.get(value)


class PoolProgress:
    """Driver side: one tqdm bar per bar name (summing its items) and a throttled sink."""

    def __init__(
        self,
        item_totals: dict[int, int],
        bar_of: dict[int, str],
        unit: str = "tok",
        sink: Callable[[float, str], None] | None = None,
    ) -> None:
        self.item_totals, self.bar_of, self.sink, self.unit = item_totals, bar_of, sink, unit
        self.done = dict.fromkeys(item_totals, 0)
        self.info: dict[str, dict[str, float]] = {}
        self.names = sorted(set(bar_of.values()), key=list(bar_of.values()).index)
        self.totals = {name: sum(t for i, t in item_totals.items() if bar_of[i] == name) for name in self.names}
        self.first: dict[str, tuple[float, int]] = {}
        self.last_sink = 0.0
        disable = bars_enabled()
        self.bars = {
            name: tqdm(total=self.totals[name], desc=name, unit=unit, unit_scale=True, mininterval=1.0, disable=disable, file=sys.stderr)
            for name in self.names
        }

    def bar_done(self, name: str) -> int:
        """Units done of a bar (sum over its items)."""
        return sum(d for i, d in self.done.items() if self.bar_of[i] == name)

    def update(self, snapshot: dict[int, tuple[int, dict[str, float]]]) -> None:
        """Apply a board snapshot: move the bars, refresh losses, maybe call the sink."""
        for item, (done, info) in snapshot.items():
            if item in self.done:
                self.done[item] = min(max(self.done[item], done), self.item_totals[item])
                if info:
                    self.info[self.bar_of[item]] = info
        self._redraw()

    def complete(self, item: int) -> None:
        """An item's result arrived: it is all done, whatever its last report said."""
        self.done[item] = self.item_totals[item]
        self._redraw()

    def _redraw(self, force_sink: bool = False) -> None:
        now = time.monotonic()
        for name, bar in self.bars.items():
            done = self.bar_done(name)
            self.first.setdefault(name, (now, done))
            if self.info.get(name):
                bar.set_postfix({k: f"{v:.4g}" for k, v in self.info[name].items()}, refresh=False)
            bar.update(done - bar.n)
        if self.sink is not None and (force_sink or now - self.last_sink >= SINK_EVERY_S):
            self.last_sink = now
            self.sink(self.percent(), self.describe())

    def percent(self) -> float:
        """Overall percent done, 0-100."""
        total = sum(self.totals.values())
        return 100.0 * sum(self.done.values()) / total if total else 100.0

    def describe(self) -> str:
        """One line per bar: done/total, rate, ETA and the latest extra numbers (loss)."""
        lines, now = [], time.monotonic()
        for name in self.names:
            done, total = self.bar_done(name), self.totals[name]
            started, at_start = self.first.get(name, (now, done))
            rate = (done - at_start) / (now - started) if now > started and done > at_start else 0.0
            eta = f"ETA {(total - done) / rate:.0f}s" if rate and done < total else ("done" if done >= total else "ETA ?")
            extra = "".join(f", {k} {v:.4g}" for k, v in self.info.get(name, {}).items())
            lines.append(f"{name}: {done:,}/{total:,} {self.unit}, {rate:,.0f} {self.unit}/s, {eta}{extra}")
        return "; ".join(lines)

    def close(self, finished: bool) -> None:
        """Close the bars; a finished run also sends its final 100% to the sink."""
        if finished:
            for item in self.done:
                self.done[item] = self.item_totals[item]
            self._redraw(force_sink=True)
        for bar in self.bars.values():
            bar.close()
