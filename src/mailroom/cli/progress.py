"""Showing delivery as it happens: a Rich progress bar on a terminal, plain
lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import time
from collections import Counter
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mailroom.cli.context import console
from mailroom.i18n import _
from mailroom.store.records import Outcome, Pending
from mailroom.store.states import SETTLED, MessageState

PLAIN_EVERY = 2.0


class DeliveryProgress:
    """Counts outcomes; ``__call__`` is the engine's ``on_outcome`` hook."""

    def __init__(self, total: int, watch: set[int] | None = None) -> None:
        self.total = total
        self.watch = watch
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()
        # The first line comes a period in, when the rate means something.
        self._last_line = self.started
        # The settled count of the last plain line, so the closing line is
        # printed only when it says something new.
        self._shown = -1
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> DeliveryProgress:
        if console.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(_("{task.fields[rate]:.1f} msg/s")),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            )
            self._bar.start()
            self._task = self._bar.add_task(_("sending"), total=self.total, rate=0.0)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.counts and self._shown != self.done:
            self._plain_line()

    def __call__(self, message: Pending, outcome: Outcome) -> None:
        if self.watch is not None and message.id not in self.watch:
            return
        self.counts[outcome.state] += 1
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.done, rate=self.rate)
        elif time.monotonic() - self._last_line >= PLAIN_EVERY:
            self._plain_line()

    @property
    def done(self) -> int:
        return sum(n for state, n in self.counts.items() if state in SETTLED)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        sent = self.counts[MessageState.sent]
        return sent / self.elapsed if self.elapsed > 0 else 0.0

    def _plain_line(self) -> None:
        self._last_line = time.monotonic()
        self._shown = self.done
        console.print(
            _("progress: {done}/{total} settled, {sent} sent, {rate:.1f} msg/s").format(
                done=self.done,
                total=self.total,
                sent=self.counts[MessageState.sent],
                rate=self.rate,
            )
        )
