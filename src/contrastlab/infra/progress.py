"""Progress of a training epoch: a bar that updates in place on a terminal, one plain line in a log.

Where output goes to a file or a pipe (DVC's log, CI, `dvc queue logs`), tqdm's carriage-return
updates pile up as thousands of fragments on one line; there each epoch prints one line when it
ends instead. Both show the loss and images per second. The bar shares stdout with the stages'
other messages, so a log keeps them in order.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from typing import TextIO

from tqdm import tqdm


class EpochProgress:
    """One epoch's batches: iterate over it, call `step` after each batch and `close` once at the end.

    The bar counts `step`s rather than wrapping the iteration, which would close it as the last batch
    is handed out, before `close` could show the epoch's mean loss on it.
    """

    def __init__(self, batches: Sequence, label: str, *, enabled: bool = True, stream: TextIO | None = None):
        self.batches = batches
        self.label = label
        self.enabled = enabled
        self.stream = sys.stdout if stream is None else stream  # looked up now: tests and tools replace sys.stdout
        self.live = enabled and self.stream.isatty()
        self.bar = tqdm(total=len(batches), desc=label, unit="batch", file=self.stream, disable=not self.live)
        self.images = 0
        self.start = time.perf_counter()

    def __iter__(self) -> Iterator:
        return iter(self.batches)

    @property
    def images_per_s(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if elapsed > 0 else 0.0

    def step(self, loss: float, images: int) -> None:
        """After a batch of `images` input images: its loss and the epoch's rate so far, on the bar only."""
        self.images += images
        if self.live:
            self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{self.images_per_s:,.0f}", refresh=False)
            self.bar.update()

    def close(self, epoch_loss: float) -> None:
        """The epoch's mean loss and rate: the bar's last state on a terminal, else one line."""
        if self.live:
            self.bar.set_postfix(loss=f"{epoch_loss:.4f}", img_s=f"{self.images_per_s:,.0f}")
        elif self.enabled:
            print(
                f"{self.label}: loss {epoch_loss:.4f}, {self.images_per_s:,.0f} images/s", file=self.stream, flush=True
            )
        self.bar.close()
