"""Epoch progress: a bar redrawn in place on a terminal, one plain line per epoch in a log."""

from __future__ import annotations

import io
import itertools

from contrastlab.infra import progress
from contrastlab.infra.progress import EpochProgress


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a console does."""

    def isatty(self) -> bool:
        return True


def two_epochs(stream: io.StringIO, enabled: bool = True) -> None:
    """Two epochs of four batches of 32 images; the epochs' mean losses are 0.25 and 0.5."""
    for epoch in (1, 2):
        bar = EpochProgress(range(4), f"epoch {epoch}/2", enabled=enabled, stream=stream)
        for _ in bar:
            bar.step(loss=0.9, images=32)
        bar.close(epoch_loss=0.25 * epoch)


def test_a_log_gets_one_line_per_epoch_with_its_loss_and_rate(monkeypatch):
    clock = itertools.count(100.0, 2.0)  # each epoch: started at t, closed 2 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    log = io.StringIO()
    two_epochs(log)
    assert log.getvalue() == "epoch 1/2: loss 0.2500, 64 images/s\nepoch 2/2: loss 0.5000, 64 images/s\n"


def test_a_terminal_gets_a_bar_redrawn_in_place_that_ends_with_the_epochs_loss():
    terminal = Terminal()
    two_epochs(terminal)
    *bars, after = terminal.getvalue().split("\n")  # not splitlines(), which also splits at "\r"
    assert len(bars) == 2 and after == ""  # one finished bar per epoch, no plain lines
    for epoch, bar in enumerate(bars, start=1):
        frames = bar.split("\r")
        assert len(frames) > 2  # drawn, redrawn, finished: all on one line
        assert frames[-1].startswith(f"epoch {epoch}/2: 100%") and "4/4" in frames[-1]
        assert f"loss={0.25 * epoch:.4f}" in frames[-1] and "img_s=" in frames[-1]


def test_disabled_progress_prints_nothing_anywhere():
    log, terminal = io.StringIO(), Terminal()
    two_epochs(log, enabled=False)
    two_epochs(terminal, enabled=False)
    assert log.getvalue() == terminal.getvalue() == ""
