"""What a study run is called: one type per kind of run that formats its name and reads it back.

A scenario run is `<dataset>-<loss>-<aug>[-<variant>][-<recipe>]-s<seed>` (a valid DVC experiment
name and the folder of its results); without the seed it is the scenario's `group`, the name
that seeds of one scenario share (MLflow's `scenario` tag, the report's rows). A baseline run is
`baseline-<dataset>-<kind>[-<variant>]-s<seed>`. The study formats names from these fields and records the
fields themselves in each run's `study.json`, so nothing downstream has to parse a name; only an
MLflow run logged from inside a DVC experiment learns who it is from the experiment's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

PROTOCOL = "protocol"  # the study's own training recipe, left out of names
MAIN_AXES = ("dataset", "loss", "aug")  # named in every scenario's name; the other axes make its variant
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")  # lists, spaces, ':' or '/' cannot be in a git ref
_SEED = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")


def safe(text: str) -> str:
    """`text` with every character a git ref cannot hold replaced by '_'."""
    return _UNSAFE.sub("_", text)


@dataclass(frozen=True)
class Scenario:
    """One scenario of a grid with one seed. `variant` names the grid axes beyond dataset/loss/aug
    where they differ from params.yaml (`negatives-hard`); `recipe` is a name of `study.recipes`."""

    dataset: str
    loss: str
    aug: str
    variant: str = ""
    recipe: str = PROTOCOL
    seed: int = 0

    @property
    def group(self) -> str:
        parts = [self.dataset, self.loss, self.aug, self.variant, "" if self.recipe == PROTOCOL else self.recipe]
        return safe("-".join(part for part in parts if part))

    @property
    def name(self) -> str:
        return f"{self.group}-s{self.seed}"

    def fields(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, params: dict) -> Scenario:
        """The scenario a stage's params describe (a stage knows no grid, so no variant or recipe)."""
        return cls(params["dataset"], params["loss"], params["aug"], seed=params["seed"])

    @classmethod
    def parse(cls, name: str, recipes: Iterable[str] = ()) -> Scenario | None:
        """The scenario a name stands for, or None if it is not one. The part between the augmentation
        and the seed is the variant, its last word the recipe when that is one of `recipes`; without
        them a recipe stays in the variant, which leaves `group` and `name` as they were."""
        match = _SEED.match(name)
        if match is None:
            return None
        parts = match["group"].split("-", 3)
        if len(parts) < 3:
            return None
        tail = parts[3] if len(parts) == 4 else ""
        variant, _, last = tail.rpartition("-")
        recipe = last if last in set(recipes) else PROTOCOL
        if recipe == PROTOCOL:
            variant = tail
        dataset, loss, aug = parts[:3]
        return cls(dataset, loss, aug, variant=variant, recipe=recipe, seed=int(match["seed"]))


@dataclass(frozen=True)
class BaselineRun:
    """One baseline (a name of `BASELINES`) on one dataset with one seed; `variant` names the params a
    baseline reads where the grid or recipe changes them (`arch-vgg_small-features-backbone`)."""

    dataset: str
    baseline: str
    seed: int = 0
    variant: str = ""

    @property
    def group(self) -> str:
        return "-".join(part for part in (self.dataset, "baseline", self.baseline, self.variant) if part)

    @property
    def name(self) -> str:
        return (
            "-".join(part for part in ("baseline", self.dataset, self.baseline, self.variant) if part)
            + f"-s{self.seed}"
        )

    def fields(self) -> dict:
        return asdict(self)
