"""How far a poll cycle has got, for whoever waits for it.

``watcher once`` on a terminal shows a bar (tqdm) once the run has lasted ``BAR_AFTER``
seconds; off a terminal, and for the daemon's first cycle, one line every ``LINE_EVERY``
seconds says how many watches are done and how many pages were read. A run shorter than
that shows nothing. The pipeline and the provider clients only call back
(``ProviderClient.on_page``, the daemon's ``on_cycle``); everything printed is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

BAR_AFTER = 1.0  # seconds a run lasts before its bar appears: short runs stay quiet
LINE_EVERY = 3.0  # seconds between one-line reports off a terminal
_TICK = 0.25  # how often a bar is redrawn (its clock moves while a slow page is awaited)


class Progress:
    """Watches done and pages read of one cycle (the first poll of each watch).

    Args:
        watch_ids: the watches of the cycle.
        bar: the terminal to draw a bar on (None: no bar).
        emit: called with a report (``watches``: "3/10", ``pages``) every ``every``
            seconds while the cycle lasts, and once more at its end (with ``seconds``) if
            it was called before (None: no reports).
        live_pages: pages are counted as they are read (``page``); else from each watch's
            outcome (``watch_done``).
        give_up_after: seconds without a watch finishing after which ``follow`` ends (a
            daemon's watch may never report its first poll: a crash outside the pipeline,
            a reload that removed it); None: never.
    """

    def __init__(
        self,
        watch_ids: Iterable[str],
        *,
        bar: TextIO | None = None,
        emit: Callable[[dict[str, object]], None] | None = None,
        live_pages: bool = False,
        every: float = LINE_EVERY,
        bar_after: float = BAR_AFTER,
        give_up_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pending = set(watch_ids)
        self.total = len(self.pending)
        self.pages = 0
        self._terminal = bar
        self._emit = emit
        self._live_pages = live_pages
        self._every = every
        self._bar_after = bar_after
        self._clock = clock
        self._started = clock()
        self._last_line = self._last_done = self._started
        self._give_up_after = give_up_after
        self._lines = 0
        self._bar: Any = None  # a tqdm bar, made when the run has lasted bar_after
        self._finished = asyncio.Event()

    @property
    def done(self) -> int:
        return self.total - len(self.pending)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def report(self) -> dict[str, object]:
        """``{"watches": "3/10", "pages": 12}`` (log fields: ``watches=3/10 pages=12``)."""
        return {"watches": f"{self.done}/{self.total}", "pages": self.pages}

    # ------------------------------------------------------------ callbacks

    def page(self, watch_id: str) -> None:
        """A page of ``watch_id`` was read (``ProviderClient.on_page``)."""
        if self._live_pages and watch_id in self.pending:
            self.pages += 1
            self._draw()

    def watch_done(self, watch_id: str, pages: int = 0) -> None:
        """``watch_id`` finished its poll; a later poll of it is not this cycle's."""
        if watch_id not in self.pending:
            return
        self.pending.discard(watch_id)
        self._last_done = self._clock()
        if not self._live_pages:
            self.pages += pages
        self._draw()
        if not self.pending:
            self._finished.set()

    def write(self, line: str, file: TextIO) -> None:
        """A line of the command's own output, printed above the bar when there is one."""
        if self._bar is not None:
            self._bar.write(line, file=file)
        else:
            print(line, file=file, flush=True)

    # ------------------------------------------------------------ showing it

    async def follow(self) -> None:
        """Draw the bar and emit the lines until the cycle is done (or cancelled)."""
        if self._terminal is None and self._emit is None:
            return
        step = _TICK if self._terminal is not None else self._every
        while not self.finished:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), step)
            if self.finished:
                return
            idle = self._clock() - self._last_done
            if self._give_up_after is not None and idle >= self._give_up_after:
                return
            self.tick()

    def tick(self) -> None:
        """What is due now: the bar once the run has lasted ``bar_after``, a line every
        ``every`` seconds."""
        now = self._clock()
        if self._terminal is not None:
            if self._bar is None and now - self._started >= self._bar_after:
                self._bar = self._make_bar()
            self._draw(refresh=True)
        if self._emit is not None and now - self._last_line >= self._every:
            self._last_line = now
            self._lines += 1
            self._emit(self.report())

    def close(self) -> None:
        """The cycle is over (or cut short): the bar goes; a run that reported its
        progress reports its end too."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._emit is not None and self._lines:
            self._lines = 0
            self._emit({**self.report(), "seconds": round(self._clock() - self._started)})

    def _make_bar(self) -> Any:
        from tqdm import tqdm

        assert self._terminal is not None
        try:  # a terminal that does not say its width (a bare pty) gets 80 columns
            sized = os.get_terminal_size(self._terminal.fileno()).columns > 0
        except (AttributeError, OSError, ValueError):
            sized = False
        bar = tqdm(
            total=self.total,
            initial=self.done,
            unit="watch",
            desc="polling",
            postfix=f"{self.pages} pages",
            file=self._terminal,
            leave=False,
            dynamic_ncols=sized,
            ncols=None if sized else 80,
            mininterval=0.1,
            delay=1e-9,  # not drawn before its clock is set back
        )
        bar.start_t -= self._clock() - self._started  # its clock counts from the run's start
        bar.refresh()
        return bar

    def _draw(self, *, refresh: bool = False) -> None:
        bar = self._bar
        if bar is None:
            return
        if bar.n != self.done:
            bar.update(self.done - bar.n)
        bar.set_postfix_str(f"{self.pages} pages", refresh=refresh)


@contextlib.contextmanager
def logs_above_bar(on: bool) -> Iterator[None]:
    """Log lines printed above the bar instead of through it (tqdm's redirect of the
    root logger's console handler); nothing changes when ``on`` is false."""
    if not on:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
