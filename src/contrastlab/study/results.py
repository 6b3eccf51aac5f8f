"""The study's kept results, grouped by scenario, and the statistics the report draws from them.

Nothing here renders: `contrastlab.study.report` writes the Markdown, `contrastlab.study.figures` the
pictures. A run is identified by the fields its `study.json` records (see `contrastlab.study.names`),
never by its folder's name, and the study's factors are ordered as their registries list them.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from contrastlab.infra.errors import DataError
from contrastlab.infra.files import details_path, one_line
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.methods.baselines import BASELINES
from contrastlab.methods.losses import LOSSES
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.study.names import PROTOCOL, BaselineRun, Scenario
from contrastlab.study.stats import MOST_SEEDS, Comparison, compare, holm, mean_ci, seeds_needed

METRICS = ("top1", "top3", "knn")
# What a run folder made before study.json recorded its params was trained and probed with, unless its
# -S overrides say otherwise: the protocol's values.
PROTOCOL_PARAMS = {
    "model.arch": "study",
    "probe.features": "embedding",
    "pairs.negatives": "label_aware",
    "split.validation_per_class": 0,
    "probe.protocol": "study",
    "model.embedding_dim": 32,
    "patches.centroids": 64,
}
BACKBONE_WIDTH = 256  # every arch's backbone features (contrastlab.methods.encoders)
# The leaderboard's families, in its order: what kind of representation a group is (`Group.family`; a baseline's
# is its registry entry's).
FAMILIES = (
    "label-free contrastive",
    "label-using contrastive",
    "supervised ceiling",
    "classical label-free",
    "raw pixels",
    "random init",
)
CLASSICAL = tuple(name for name, b in BASELINES.items() if b.family == FAMILIES[3])  # label-free, no network
FACTORS: dict[str, dict] = {
    "loss": LOSSES,
    "aug": AUGMENTATIONS,
}  # the study's factors -> the registries that list their levels


@dataclass
class Group:
    """All seeds of one scenario (or of one baseline on one dataset)."""

    runs: list[dict] = field(default_factory=list)

    @property
    def is_baseline(self) -> bool:
        return "baseline" in self.runs[0]["study"]

    def setting(self, name: str):
        """A field of the group's identity as study.json records it (`dataset`, `loss`, `aug`, `variant`,
        `recipe`, or `baseline`): the same for every seed."""
        return self.runs[0]["study"][name]

    @property
    def dataset(self) -> str:
        return self.setting("dataset")

    @property
    def recipe(self) -> str:
        return self.setting("recipe")

    @property
    def variant(self) -> str:
        """Grid axes beyond dataset/loss/aug, e.g. "negatives-random"; "" for none (and for baselines made
        before they had variants)."""
        return self.runs[0]["study"].get("variant", "")

    @property
    def label(self) -> str:
        """ "<loss> / <aug>[ / <variant>][ (<recipe> recipe)]", or the baseline's label in its registry."""
        if self.is_baseline:
            return BASELINES[self.setting("baseline")].label
        return self.described_by(self.variant)

    def described_by(self, variant: str) -> str:
        """The scenario's label with `variant` in place of its own (the report names held-out candidates by
        only what differs between them)."""
        label = " / ".join(part for part in (self.setting("loss"), self.setting("aug"), variant) if part)
        return label if self.recipe == PROTOCOL else f"{label} ({self.recipe} recipe)"

    def param(self, path: str):
        """A param of the group's runs (`model.arch`) as study.json records it; a run made before the param
        existed (or before study.json recorded params) had the protocol's value unless its overrides say otherwise."""
        study = self.runs[0]["study"]
        node = study.get("params", {})
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                overrides = study.get("overrides", {})
                return overrides[path] if path in overrides else PROTOCOL_PARAMS[path]
            node = node[part]
        return node

    @property
    def labels_used(self) -> bool:
        """Whether training saw labels: a label-using two-view loss (SupCon), negatives chosen or mined by
        label (the protocol's pairs and triplets), or the supervised baseline."""
        if self.is_baseline:
            return BASELINES[self.setting("baseline")].uses_labels
        loss = LOSSES[self.setting("loss")]
        if loss.examples == "views":  # the rest of the batch are its negatives, whatever pairs.negatives says
            return loss.uses_labels
        return self.param("pairs.negatives") != "random"

    @property
    def family(self) -> str:
        """Which of FAMILIES the group belongs to."""
        if not self.is_baseline:
            return FAMILIES[1] if self.labels_used else FAMILIES[0]
        return BASELINES[self.setting("baseline")].family

    @property
    def width(self) -> int:
        """How many features the probe reads: the classical baselines' 4 x centroids, raw pixels' pixel count (or
        the backbone's size they are projected to), an encoder's embedding or backbone."""
        kind = self.setting("baseline") if self.is_baseline else None
        if kind in CLASSICAL:
            return 4 * self.param("patches.centroids")
        if self.param("probe.features") == "backbone":
            return BACKBONE_WIDTH
        if kind == "raw_pixels":
            spec = DATASETS[self.dataset]
            return spec.channels * spec.size**2
        return self.param("model.embedding_dim")

    @property
    def cpu_minutes(self) -> float:
        """CPU-minutes (wall time x the threads the machine ran) of training: train.json's training time for a
        scenario; a baseline's whole run (fitting its features, embedding and probing: an upper bound), none for
        raw pixels. Mean over seeds."""
        if self.is_baseline and self.setting("baseline") == "raw_pixels":
            return 0.0
        seconds = [run["train"]["train_time_s"] if "train" in run else run["study"]["wall_s"] for run in self.runs]
        threads = [
            int(m[1]) if (m := re.search(r"(\d+) threads?", run["study"].get("machine", ""))) else 2
            for run in self.runs
        ]
        return statistics.fmean(s * t for s, t in zip(seconds, threads, strict=True)) / 60

    @property
    def unconverged(self) -> int:
        """How many seeds' linear probe stopped at `probe.max_iter` before the solver converged (their top-1 is what
        it reached by then: likely a little low). Probes made before the flag existed count as converged."""
        return sum(run["probe"].get("converged") is False for run in self.runs)

    def values(self, metric: str) -> list[float]:
        return [run["probe"][metric] for run in self.runs]

    def mean(self, metric: str) -> float:
        return statistics.fmean(self.values(metric))

    def ci(self, metric: str) -> float | None:
        """Half-width of the 95% confidence interval of the mean over seeds (t-based); None with one seed."""
        return mean_ci(self.values(metric))[1]

    def std(self, metric: str) -> float:
        """Sample standard deviation over seeds (0 with one seed, where the spread is unknown)."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def published(self) -> dict[str, float] | None:
        """The published study's numbers for this scenario, if it has any."""
        return published_results().get((self.dataset, self.setting("loss"), self.setting("aug")))


@functools.cache
def published_results() -> dict[tuple[str, str, str], dict[str, float]]:
    """(dataset, loss, aug) -> the study's published probe_top1, probe_top3, knn_top1."""
    text = resources.files(__package__).joinpath("published_results.csv").read_text()
    return {
        (row["dataset"], row["loss"], row["aug"]): {
            "top1": float(row["probe_top1"]),
            "top3": float(row["probe_top3"]),
            "knn": float(row["knn_top1"]),
        }
        for row in csv.DictReader(text.splitlines())
    }


@functools.cache
def study_repeat_spread() -> tuple[float, float]:
    """How far the study's own two runs of identical settings differ in top-1 (smallest, largest):
    its earlier and final results sheets (`study_repeats.csv`, rows with the same settings)."""
    text = resources.files(__package__).joinpath("study_repeats.csv").read_text()
    gaps = [
        abs(float(row["earlier_top1"]) - float(row["final_top1"]))
        for row in csv.DictReader(text.splitlines())
        if row["same_settings"] == "yes"
    ]
    return min(gaps), max(gaps)


class DamagedRun(ValueError):
    """A run folder that cannot be read as a result; the message says what is wrong with it, in one line."""


WHAT = {float: "a finite number", int: "a whole number", str: "text", dict: "an object"}
# What the report and the importer read from a run's JSON files, as `WHAT`'s types ("?": may be missing, as older
# folders lack what later runs record; {str: float}: an object of finite numbers).
FIELDS: dict[str, dict] = {
    "study.json": {
        "dataset": str,
        "seed": int,
        "finished": str,
        "variant?": str,
        "recipe?": str,
        "wall_s?": float,
        "machine?": str,
        "params?": dict,
        "overrides?": dict,
    },
    "probe.json": {
        "top1": float,
        "top3": float,
        "knn": float,
        "per_class?": {str: float},
        "shifted_top1?": {str: float},
    },
    "train.json": {"train_time_s": float, "epochs?": int, "final_loss?": float, "images_per_s?": float},
    "examples.json": {"false_negative_rate": float},
}
KINDS = {"scenario": {"loss": str, "aug": str}, "baseline": {"baseline": str}}  # study.json's fields of each kind
CLASS = "class"  # a CSV column holding one of the dataset's class labels
# The CSVs a scenario's folder keeps, their columns as `WHAT`'s types or CLASS; train_loss.csv only the importer
# needs (the report's hand-made folders lack it).
TABLES: dict[str, dict] = {
    "train_loss.csv": {"loss": float},
    "tsne.csv": {"x": float, "y": float, "class": CLASS},
    "confusion.csv": {"actual": CLASS, "predicted": CLASS},
}


def finite(value: object) -> bool:
    """A number as JSON and MLflow take one (not a bool, not text), neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_a(value: object, kind) -> bool:
    """Whether `value` is what a kind of `FIELDS` says."""
    if isinstance(kind, dict):
        return isinstance(value, dict) and all(map(finite, value.values()))
    return finite(value) if kind is float else isinstance(value, kind) and not isinstance(value, bool)


def checked(data: object, fields: dict, file: str) -> dict:
    """`data` as read from `file`, or DamagedRun naming the first field that is missing or not what `fields` say."""
    if not isinstance(data, dict):
        raise DamagedRun(f"{file} holds no JSON object")
    for key, kind in fields.items():
        name = key.rstrip("?")
        if name not in data and key.endswith("?"):
            continue
        if name not in data:
            raise DamagedRun(f"{file} has no {name}")
        if not is_a(data[name], kind):
            what = "an object of finite numbers" if isinstance(kind, dict) else WHAT[kind]
            raise DamagedRun(f"{file}: {name} is {one_line(repr(data[name]), 40)}, not {what}")
    return data


def read_json(folder: Path, file: str) -> dict:
    """A run's JSON file, with its details (`details_path`) where the run kept them, checked against `FIELDS`."""
    data = parsed(folder, file)
    details = details_path(folder / file)
    if details.exists():
        data |= parsed(folder, details.name)
    return checked(data, FIELDS[file], file)


def parsed(folder: Path, file: str) -> dict:
    try:
        return json.loads((folder / file).read_text())
    except FileNotFoundError:
        raise DamagedRun(f"no {file}") from None
    except OSError as err:
        raise DamagedRun(f"{file} is unreadable ({one_line(err, 120)})") from None
    except ValueError as err:  # truncated, or not UTF-8
        raise DamagedRun(f"{file} is not valid JSON ({one_line(err, 120)})") from None


def cell(text: str | None, kind, classes: dict[str, int], dataset: str) -> float | int:
    """One CSV cell as `kind` (a CLASS: the label's index among the dataset's classes)."""
    if text is None:
        raise DamagedRun("is missing")
    if kind is CLASS:
        if text not in classes:
            raise DamagedRun(f"{one_line(repr(text), 40)} is not one of {dataset}'s classes")
        return classes[text]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DamagedRun(f"is {one_line(repr(text), 40)}, not a finite number")
    return value


def read_table(path: Path, dataset: str) -> dict[str, list]:
    """One of `TABLES`: column -> its cells (`cell`), or DamagedRun naming the first that is not what it must be."""
    classes = {name: i for i, name in enumerate(DATASETS[dataset].classes)}
    columns = TABLES[path.name]
    table: dict[str, list] = {column: [] for column in columns}
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                for column, kind in columns.items():
                    try:
                        table[column].append(cell(row.get(column), kind, classes, dataset))
                    except DamagedRun as err:
                        raise DamagedRun(f"{path.name} line {reader.line_num}: {column} {err}") from None
    except FileNotFoundError:
        raise DamagedRun(f"no {path.name}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DamagedRun(f"{path.name} is unreadable ({one_line(err, 120)})") from None
    return table


def read_run(folder: Path) -> dict:
    """A run folder, checked whole before the report or the importer uses any of it (so that neither stops half way
    on a bad value, nor prints one): {"folder", "study", "probe"} and for a scenario "train", "examples" (when it kept
    one) and "tables" (`TABLES` as `read_table` reads them). DamagedRun says what is wrong, in one line."""
    study = read_json(folder, "study.json")
    kind = "baseline" if "baseline" in study else "scenario"
    checked(study, KINDS[kind], "study.json")
    if study["dataset"] not in DATASETS:
        raise DamagedRun(
            f"study.json: dataset {one_line(repr(study['dataset']), 40)} is not one of {', '.join(DATASETS)}"
        )
    run = {"folder": folder, "study": study, "probe": read_json(folder, "probe.json")}
    if kind == "scenario":
        run["train"] = read_json(folder, "train.json")
        if (folder / "examples.json").exists():  # the earliest runs kept none
            run["examples"] = read_json(folder, "examples.json")
        run["tables"] = {
            name: read_table(folder / name, study["dataset"])
            for name in TABLES
            if name != "train_loss.csv" or (folder / name).exists()
        }
    return run


def read_runs(results: Path) -> tuple[list[dict], list[str]]:
    """(every complete run folder `read_run` accepts; "<folder>: <what is wrong>" for each other one, by name). A
    folder still being written is refused, and so is a second folder of one group's seed (a copy under another
    name would count twice): the folder named as its study.json says is kept."""
    if not results.is_dir():
        raise DataError(f"no results folder {results} (run the study first, or name its folder with --results)")
    runs, refused = [], []
    for folder in sorted(path for path in results.iterdir() if path.is_dir()):
        try:
            if folder.name.endswith(".partial"):
                raise DamagedRun("a run still being written (or interrupted while written)")
            runs.append(read_run(folder))
        except DamagedRun as err:
            refused.append(f"{folder}: {err}")
    kept: dict[tuple, dict] = {}
    for run in sorted(runs, key=lambda run: (run["folder"].name != run["study"].get("name"), run["folder"].name)):
        group, seed = group_name(run["study"]), run["study"]["seed"]
        if (group, seed) in kept:
            refused.append(
                f"{run['folder']}: seed {seed} of {group} again (already read from {kept[group, seed]['folder'].name})"
            )
        kept.setdefault((group, seed), run)
    chosen = {id(run) for run in kept.values()}
    return [run for run in runs if id(run) in chosen], sorted(refused)


def group_name(study: dict) -> str:
    """The name that the seeds of one scenario (or baseline) share, from the fields of its study.json."""
    kind = BaselineRun if "baseline" in study else Scenario
    return kind(**{f.name: study[f.name] for f in dataclasses.fields(kind) if f.name in study}).group


def load(results: Path, refused: list[str] | None = None) -> tuple[dict[str, Group], dict[str, Group]]:
    """Scenario groups and baseline groups keyed by `group_name`, in the order of the study: by seed,
    then by when each run finished. A folder `read_runs` refuses is left out and named in a line added to
    `refused`; without that list to say so in, it is an error: partial data never passes for the whole."""
    runs, lines = read_runs(results)
    if lines:
        if refused is None:
            raise DataError(lines[0] + (f" (and {len(lines) - 1} more folders)" if len(lines) > 1 else ""))
        refused.extend(lines)
    scenarios: dict[str, Group] = {}
    baselines: dict[str, Group] = {}
    for run in sorted(runs, key=lambda run: (run["study"]["seed"], run["study"]["finished"])):
        groups = baselines if "baseline" in run["study"] else scenarios
        groups.setdefault(group_name(run["study"]), Group()).runs.append(run)
    return scenarios, baselines


def baseline(baselines: dict[str, Group], dataset: str, kind: str, variant: str = "") -> Group | None:
    """The group of one baseline (a key of `BASELINES`) on one dataset (with the params `variant` names), if it ran."""
    return baselines.get(BaselineRun(dataset, kind, variant=variant).group)


def in_registry_order(factor: str, levels: Iterable[str]) -> list[str]:
    """The distinct `levels` of a factor ("loss" or "aug") in the order of its registry; a level the
    registry no longer lists (a result older than the code) goes last."""
    position = {name: i for i, name in enumerate(FACTORS[factor])}
    return sorted(dict.fromkeys(levels), key=lambda level: position.get(level, len(position)))


def by_dataset(groups: dict[str, Group]) -> dict[str, list[Group]]:
    grouped: dict[str, list[Group]] = defaultdict(list)
    for group in groups.values():
        grouped[group.dataset].append(group)
    return grouped


def is_study_scenario(group: Group) -> bool:
    """One of the study's 12 scenarios (loss, aug, no other axis changed), with any recipe."""
    return not group.variant and group.published() is not None


def is_main_scenario(group: Group) -> bool:
    """One of the study's 12 scenarios trained with the study's own recipe: the report's main table."""
    return group.recipe == PROTOCOL and is_study_scenario(group)


def is_recipe_cell(group: Group) -> bool:
    """One of the study's 12 scenarios, trained with another recipe: shown in the recipe table."""
    return group.recipe != PROTOCOL and is_study_scenario(group)


def is_precision_twin(group: Group) -> bool:
    """One of the study's 12 scenarios with the study's own recipe, trained at another precision and nothing
    else changed (`--set train.precision=bf16`): the same method, so the report compares it with the fp32
    scenario, never lists it as a new one."""
    return (
        group.recipe == PROTOCOL
        and group.published() is not None
        and re.fullmatch(r"precision-[^-]+", group.variant) is not None
    )


def by_seed(group: Group, metric: str = "top1") -> dict[int, float]:
    """The group's `metric` keyed by seed: what the tests pair."""
    return {run["study"]["seed"]: run["probe"][metric] for run in group.runs}


def compare_groups(a: Group, b: Group, metric: str = "top1", one_seed_varies_alike: bool = False) -> Comparison:
    """mean(a) - mean(b) with its confidence interval and test (`contrastlab.study.stats.compare`)."""
    return compare(by_seed(a, metric), by_seed(b, metric), one_seed_varies_alike=one_seed_varies_alike)


def needed_text(seeds: int | None) -> str:
    """`seeds_needed`'s answer in words: "", "12" or "more than 1000"."""
    return "" if seeds is None else f"more than {MOST_SEEDS}" if seeds > MOST_SEEDS else str(seeds)


class Ledger:
    """Every comparison the report states, family by family (a table's column, a list of findings), each family
    Holm-corrected together; `rows` are comparisons.csv's."""

    COLUMNS = [
        "family",
        "dataset",
        "a",
        "b",
        "a_group",
        "b_group",
        "test",
        "diff",
        "ci_low",
        "ci_high",
        "p",
        "p_holm",
        "finding",
        "seeds_needed",
    ]

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def family(self, name: str, pairs: Iterable[tuple[Group, Group]], **how) -> list[Comparison]:
        """mean(a) - mean(b) for each pair, tested (`compare_groups`) and corrected together, and recorded."""
        if any(row["family"] == name for row in self.rows):
            raise ValueError(f"a family of comparisons named {name!r} was tested already: name each family once")
        pairs = list(pairs)
        tested = holm([compare_groups(a, b, **how) for a, b in pairs])
        for (a, b), c in zip(pairs, tested, strict=True):
            bounds = {"ci_low": c.low, "ci_high": c.high, "p": c.p, "p_holm": c.p_holm}
            self.rows.append(
                {
                    "family": name,
                    "dataset": a.dataset,
                    "a": a.label,
                    "b": b.label,
                    "a_group": group_name(a.runs[0]["study"]),
                    "b_group": group_name(b.runs[0]["study"]),
                    "test": c.test,
                    "diff": round(c.diff, 6),
                    **{key: "" if value is None else round(value, 6) for key, value in bounds.items()},
                    "finding": "yes" if c.finding else "no",
                    "seeds_needed": "" if c.finding else needed_text(seeds_needed(c)),
                }
            )
        return tested


def ranking(group: Group) -> tuple[bool, float]:
    """The sort key of "best": groups of several seeds above single runs, then by mean top-1, so a single run is
    never ranked as if certain (`verdict.leaders` shows a better one after its family's best group instead)."""
    return len(group.runs) > 1, group.mean("top1")


def without_axes(variant: str, *axes: str) -> str:
    """A grid variant without the given axes ("epochs", "arch"), to find the same method at another training
    length or on another encoder; `warmup_epochs-N` is an axis of its own, not "epochs"."""
    for axis in axes:
        variant = re.sub(rf"(?:^|-){axis}-[^-]+(?=-|$)", "", variant)
    return variant.strip("-")


def factor_effect(groups: list[Group], factor: str) -> tuple[float, dict[str, float]]:
    """Range of the factor's marginal means (averaged over the other factors) and the means themselves,
    in the registry's order."""
    levels: dict[str, list[float]] = defaultdict(list)
    for g in groups:
        levels[g.setting(factor)].append(g.mean("top1"))
    means = {level: statistics.fmean(levels[level]) for level in in_registry_order(factor, levels)}
    return max(means.values()) - min(means.values()), means


def shift_top1(group: Group, pixels: int) -> float | None:
    """Mean probe top-1 over seeds on test images shifted by +-pixels (None where not measured)."""
    found = [
        run["probe"]["shifted_top1"][key]
        for run in group.runs
        for key in (str(pixels), str(-pixels))
        if key in run["probe"].get("shifted_top1", {})
    ]
    return statistics.fmean(found) if found else None
