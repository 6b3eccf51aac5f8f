"""Read and validate `params.yaml` so that a bad value stops a stage before any work.

A stage names what it reads (`READS`: top-level keys, whole sections, or single `section.key`s)
and gets exactly that, checked against the schema below, plus every check of a combination of
keys it reads (`COMBINATIONS`): the first problem becomes one `ParamError` line naming the key,
the value and what is allowed. Method names (datasets, losses, augmentations, heads, baselines)
are checked against their registries, looked up in `REGISTRIES` and imported only when a stage
reads such a key, so registering a new method is enough to make `-S loss=<name>` valid and a stage
that reads no method name never imports one.
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contrastlab.infra.errors import ParamError, shown

AUTO = "auto"
ALL = "all"

# kind of name -> (module, registry in it): the one table of what a method name is checked against.
REGISTRIES = {
    "dataset": ("contrastlab.pipeline.datasets", "DATASETS"),
    "loss": ("contrastlab.methods.losses", "LOSSES"),
    "aug": ("contrastlab.methods.augmentations", "AUGMENTATIONS"),
    "head": ("contrastlab.methods.encoders", "HEADS"),
    "arch": ("contrastlab.methods.encoders", "ARCHS"),
    "baseline": ("contrastlab.methods.baselines", "BASELINES"),
}


def registry(kind: str) -> dict:
    """The registry of `kind` (a key of REGISTRIES), imported on first use."""
    module, name = REGISTRIES[kind]
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Rule:
    """One key's contract: `check` says whether a value is fine, `allowed` says what would be."""

    allowed: str
    check: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """An int, or a float other than YAML's .nan and .inf (no computation survives those)."""
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _bounded(
    noun: str,
    is_kind: Callable[[Any], bool],
    lo: float,
    *,
    strict: bool = False,
    most: float | None = None,
    below: float | None = None,
    word: str | None = None,
) -> Rule:
    """A `noun` > `lo` if `strict`, else >= `lo`, and at most `most` or under `below` where a larger value can only be
    a typo that would fail (or run for days) in the middle of the work; or the keyword `word` (e.g. 'auto')."""
    allowed = f"{noun} {'>' if strict else '>='} {lo}"
    allowed += f" and <= {most}" if most is not None else ""
    allowed += f" and < {below}" if below is not None else ""
    return Rule(
        (f"'{word}' or " if word else "") + allowed,
        lambda v: (
            (word is not None and v == word)
            or (
                is_kind(v)
                and (v > lo if strict else v >= lo)
                and (most is None or v <= most)
                and (below is None or v < below)
            )
        ),
    )


def int_at_least(lo: int, word: str | None = None, most: int | None = None) -> Rule:
    return _bounded("an integer", _is_int, lo, most=most, word=word)


def positive_number(word: str | None = None, most: float | None = None) -> Rule:
    return _bounded("a finite number", _is_number, 0, strict=True, most=most, word=word)


def number_at_least(lo: float, below: float | None = None) -> Rule:
    return _bounded("a finite number", _is_number, lo, below=below)


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def int_list(most: int) -> Rule:
    """Integers from -most to most, e.g. shifts in pixels that must leave part of the image."""
    return Rule(
        f"a list of integers >= {-most} and <= {most} (may be empty)",
        lambda v: isinstance(v, list) and all(_is_int(x) and abs(x) <= most for x in v),
    )


def fraction() -> Rule:
    return Rule("a number strictly between 0 and 1", lambda v: _is_number(v) and 0 < v < 1)


def one_of(*options: str) -> Rule:
    return Rule("one of " + ", ".join(options), lambda v: v in options)


def list_of(*options: str) -> Rule:
    return Rule(
        "a non-empty list drawn from " + ", ".join(options),
        lambda v: isinstance(v, list) and len(v) > 0 and all(x in options for x in v),
    )


def _is_grid(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and len(v) > 0
        and all(isinstance(k, str) and isinstance(x, list) and len(x) > 0 for k, x in v.items())
    )


def named_grids() -> Rule:
    return Rule(
        "a mapping of grid names to grids (param names as `-S` takes them -> non-empty lists of values)",
        lambda v: isinstance(v, dict) and len(v) > 0 and all(isinstance(k, str) and _is_grid(g) for k, g in v.items()),
    )


def named_overrides() -> Rule:
    return Rule(
        "a mapping of recipe names to mappings of param names (as `-S` takes them) to values",
        lambda v: (
            isinstance(v, dict)
            and len(v) > 0
            and all(
                isinstance(k, str) and isinstance(o, dict) and all(isinstance(x, str) for x in o) for k, o in v.items()
            )
        ),
    )


def optional_text() -> Rule:
    return Rule("a path (text) or null", lambda v: v is None or isinstance(v, str))


@dataclass(frozen=True)
class Registered:
    """A method name (or a non-empty list of them) of a registry, which is imported when first checked."""

    kind: str
    many: bool = False

    def __call__(self) -> Rule:
        names = sorted(registry(self.kind))
        if self.many:
            return Rule(
                "a non-empty list drawn from " + ", ".join(names),
                lambda v: isinstance(v, list) and len(v) > 0 and all(x in names for x in v),
            )
        return one_of(*names)


SOURCES = ("mirror", "torchvision", "pypi")
CPU_KERNELS = ("native", "portable")  # portable: AVX2's on every x86-64 CPU (contrastlab.infra.machine)
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"  # train.device (contrastlab.infra.machine.pick_device)
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
PRECISIONS = ("fp32", "bf16", "fp16")  # autocast of the encoder's forward passes (fp16: CUDA only, gradients scaled)
NEGATIVES = ("label_aware", "random", "hard")
OPTIMIZERS = ("sgd", "adamw")
FEATURES = ("embedding", "backbone")  # what the probe reads: the loss's embedding, or the layer before the projection
# where the probe fits and scores: the study's seeded split of the evaluation images, or (the published linear
# evaluation) fitted on every training image's features and scored on every evaluation image
PROTOCOLS = ("study", "standard")
SCHEDULES = ("constant", "cosine", "onecycle")
# Upper bounds: far beyond any sensible run, so a larger value is a typo that would otherwise fail (or run for
# days) in the middle of the work. Counts that the data bounds (tsne.n_points, probe.knn_k,
# split.validation_per_class) are checked against it where the data is read.
MANY = 1_000_000  # sizes of batches and anchor sets, optimiser iterations
MAX_EPOCHS = 10_000
MAX_SMALL_CROPS = 64  # multi-crop's small crops per image (EMP-SSL uses 20 views)
MIN_CROP = 8  # pixels: a smaller crop leaves the encoders' pooled maps empty
NARROWEST_IMAGE = (
    28  # pixels: MNIST's width; a shift of the test images must leave some of every image; a patch must fit
)

# section -> key -> rule (or a factory for rules that depend on the registries).
SCHEMA: dict[str | None, dict[str, Rule | Registered]] = {
    None: {
        "dataset": Registered("dataset"),
        "loss": Registered("loss"),
        "aug": Registered("aug"),
        "seed": int_at_least(0, most=2**32 - 1),  # scikit-learn takes seeds below 2**32
        "cpu_kernels": one_of(*CPU_KERNELS),
    },
    "download": {
        "mirror": optional_text(),
        "sources": list_of(*SOURCES),
        "digests": optional_text(),
    },
    "model": {
        "arch": Registered("arch"),
        "embedding_dim": int_at_least(1, most=4096),  # 16x the backbone's 256 features
    },
    "split": {"validation_per_class": int_at_least(0)},
    "pairs": {
        "anchors_per_class": int_at_least(1, most=MANY),
        "negatives": one_of(*NEGATIVES),
        "augment_anchor": boolean(),
    },
    "train": {
        "epochs": int_at_least(1, AUTO, most=MAX_EPOCHS),
        "batch_size": int_at_least(1, most=MANY),
        "lr": positive_number(AUTO),
        "views": one_of("fresh", "once"),
        "precision": one_of(*PRECISIONS),
        "compile": boolean(),
        "device": Rule(
            "one of " + DEVICE_CHOICES, lambda v: isinstance(v, str) and DEVICE_PATTERN.fullmatch(v) is not None
        ),
        "deterministic": boolean(),
        "head": Registered("head"),
        "optimizer": one_of(*OPTIMIZERS),
        "momentum": number_at_least(0, below=1),
        "weight_decay": number_at_least(0),
        "schedule": one_of(*SCHEDULES),
        "warmup_epochs": int_at_least(0, most=MAX_EPOCHS),
        "margin": positive_number(),
        "temperature": positive_number(),
        "invariance": number_at_least(0),
        "variance": number_at_least(0),
        "covariance": number_at_least(0),
        "redundancy": number_at_least(0),
        "small_crops": int_at_least(0, most=MAX_SMALL_CROPS),
        "small_crop_size": int_at_least(MIN_CROP, most=NARROWEST_IMAGE),
        "checkpoint": boolean(),
    },
    "embed": {"batch_size": int_at_least(1, most=MANY), "shifts": int_list(NARROWEST_IMAGE - 1)},
    "tsne": {
        "n_points": int_at_least(2, ALL),
        "perplexity": positive_number(most=10_000),
        "max_iter": int_at_least(250, most=MANY),
    },
    "probe": {
        "test_size": fraction(),
        "knn_k": int_at_least(1),
        "max_iter": int_at_least(1, most=MANY),
        "standardize": boolean(),
        "features": one_of(*FEATURES),
        "protocol": one_of(*PROTOCOLS),
    },
    # the label-free patch baselines (contrastlab.methods.patches): K centroids or filters give 4K features
    "patches": {"centroids": int_at_least(1), "size": int_at_least(1, most=NARROWEST_IMAGE)},
    # Read by the study command only, never by a stage: not part of any scenario's params.
    "study": {
        "seeds": int_at_least(1, most=1000),
        "grids": named_grids(),
        "recipes": named_overrides(),
        "baselines": Registered("baseline", many=True),
    },
}
STUDY_ONLY = ("study",)


def _negatives_fit_the_loss(p: dict) -> str | None:
    """Negatives the loss's examples would silently ignore."""
    layouts = {name: loss.examples for name, loss in registry("loss").items()}
    negatives = p["pairs"]["negatives"]
    if negatives == "hard" and layouts[p["loss"]] != "triplets":
        return "pairs.negatives='hard' mines semi-hard negatives for triplets; use it with loss=triplet"
    if negatives == "random" and layouts[p["loss"]] == "views":
        two_view = ", ".join(name for name, layout in layouts.items() if layout == "views")
        return (
            f"pairs.negatives='random' has no effect on two-view losses ({two_view}), whose negatives are the "
            "rest of the batch; leave it at label_aware"
        )
    return None


def _views_fit_the_loss(p: dict) -> str | None:
    """Multi-crop's small crops for a loss without two views or an encoder of one input size, or a loss with a head it
    cannot learn through (`Loss.heads`)."""
    layouts = {name: loss.examples for name, loss in registry("loss").items()}
    if p["train"]["small_crops"] and layouts[p["loss"]] != "views":
        two_view = ", ".join(name for name, layout in layouts.items() if layout == "views")
        return (
            f"train.small_crops={p['train']['small_crops']} adds views for two-view losses ({two_view}); "
            f"loss={p['loss']} trains on {layouts[p['loss']]}: set train.small_crops: 0 or a two-view loss"
        )
    if p["train"]["small_crops"] and not registry("arch")[p["model"]["arch"]].any_size:
        pooled = ", ".join(name for name, arch in registry("arch").items() if arch.any_size)
        return (
            f"train.small_crops needs an encoder that embeds images of any size; model.arch={p['model']['arch']} "
            f"reads a map of one size: use {pooled}"
        )
    heads = registry("loss")[p["loss"]].heads
    if heads is not None and p["train"]["head"] not in heads:
        return (
            f"loss={p['loss']} cannot learn through train.head={p['train']['head']} (vicreg asks each embedding "
            f"coordinate's std to reach 1, which sigmoid and l2 embeddings cannot); set train.head: {heads[0]}"
        )
    return None


def _arch_embeds_to_the_size(p: dict) -> str | None:
    """An arch with a fixed embedding size (the study's 32) cannot honour another `model.embedding_dim`."""
    arch, size = p["model"]["arch"], p["model"]["embedding_dim"]
    fixed = registry("arch")[arch].embedding_dim
    if fixed is not None and size != fixed:
        return (
            f"model.arch='{arch}' always embeds to {fixed} dimensions; set model.embedding_dim: {fixed} or another arch"
        )
    return None


def _warmup_ends_before_training(p: dict) -> str | None:
    """A warm-up as long as training never reaches train.lr (onecycle has its own and ignores it)."""
    t = p["train"]
    if t["schedule"] != "onecycle" and t["epochs"] != AUTO and t["warmup_epochs"] >= t["epochs"]:
        return (
            f"train.warmup_epochs={t['warmup_epochs']} but training lasts only train.epochs={t['epochs']}, "
            f"so the learning rate would never reach train.lr; use at most {t['epochs'] - 1}"
        )
    return None


# Checks of param combinations: (the keys involved, check -> the problem or None). A stage runs
# each check whose keys it reads; the study runs them all before it starts any scenario.
COMBINATIONS: list[tuple[tuple[str, ...], Callable[[dict], str | None]]] = [
    (("loss", "pairs.negatives"), _negatives_fit_the_loss),
    (("loss", "train.small_crops", "train.head", "model.arch"), _views_fit_the_loss),
    (("model.arch", "model.embedding_dim"), _arch_embeds_to_the_size),
    (("train.epochs", "train.warmup_epochs", "train.schedule"), _warmup_ends_before_training),
]


def _rule(name: str) -> Rule | Registered:
    section, _, key = name.rpartition(".")
    return SCHEMA[section or None][key]


def expand(reads: Iterable[str]) -> list[str]:
    """Every single key that `reads` (keys and whole sections) covers."""
    keys = []
    for name in reads:
        if name in SCHEMA:
            keys += [f"{name}.{key}" for key in SCHEMA[name]]
        else:
            section, _, key = name.rpartition(".")
            if key not in SCHEMA.get(section or None, {}):
                raise ValueError(f"{name!r} is neither a key nor a section of params.yaml's schema")
            keys.append(name)
    return keys


def registry_modules(reads: Iterable[str]) -> set[str]:
    """The registry modules that validating `reads` imports: code whose change can alter what a stage accepts."""
    rules = [_rule(key) for key in expand(reads)]
    return {REGISTRIES[rule.kind][0] for rule in rules if isinstance(rule, Registered)}


def _check(name: str, value: Any, rule: Rule | Registered) -> None:
    rule = rule if isinstance(rule, Rule) else rule()
    if not rule.check(value):
        raise ParamError(f"params.yaml: {name}={shown(value)} is not allowed; expected {rule.allowed}")


def _lookup(raw: dict, key: str) -> Any:
    section, _, name = key.rpartition(".")
    node: Any = raw
    if section:
        node = raw.get(section)
        if node is None:
            raise ParamError(f"params.yaml: missing section '{section}'")
        if not isinstance(node, dict):
            raise ParamError(
                f"params.yaml: {section}={shown(node)} is not allowed; expected a section of keys and values"
            )
    if name not in node:
        raise ParamError(
            f"params.yaml: missing key '{key}'" if section else f"params.yaml: missing top-level key '{key}'"
        )
    return node[name]


MOST_VALUES = 100_000  # the committed params.yaml holds about 550


def _expands_beyond(raw: Any, most: int) -> bool:
    """Whether `raw` holds more than `most` keys and values, counting a shared one (a YAML alias) each time it is
    referenced: a few lines of aliases of aliases expand to billions, which any walk (a message's repr, a JSON
    dump) would never finish. Stops counting past `most`."""
    pending, count = [raw], 0
    while pending and count <= most:
        node = pending.pop()
        count += 1
        if isinstance(node, dict):
            pending += [*node, *node.values()]
        elif isinstance(node, list):
            pending += node
    return count > most


def _refuse_unknown(keys: Iterable[Any], known: list[str], prefix: str = "", suggest: bool = False) -> None:
    """A key the schema does not know (`sead: 3`, `train.epoch: 5`) is a typo that would otherwise be ignored."""
    unknown = sorted(set(keys) - set(known), key=str)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), known, n=1) if suggest else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ParamError(f"params.yaml: {prefix}{unknown[0]} is not a known key{hint}; known keys: {', '.join(known)}")


def validate(raw: Any, reads: Iterable[str]) -> dict:
    """The params named by `reads` (top-level keys, whole sections or `section.key`s) out of `raw`,
    each checked against SCHEMA, a whole section also for unknown keys, then every combination of them.
    Every validation also refuses an unknown top-level key and a document of alias chains."""
    if not isinstance(raw, dict):
        raise ParamError("params.yaml: the file must be a mapping of keys to values")
    if _expands_beyond(raw, MOST_VALUES):
        raise ParamError(
            f"params.yaml: the document expands to more than {MOST_VALUES} values (a YAML alias "
            "chain?); write the values out instead"
        )
    _refuse_unknown(raw, [*SCHEMA[None], *(section for section in SCHEMA if section)], suggest=True)
    reads = list(reads)
    for section in reads:
        if section in SCHEMA and isinstance(raw.get(section), dict):
            # without a suggestion: this line is in the docs' table of mistakes (tests/test_bad_inputs.py) as is
            _refuse_unknown(raw[section], list(SCHEMA[section]), prefix=f"{section}.")
    out: dict[str, Any] = {}
    keys = expand(reads)
    for key in keys:
        value = _lookup(raw, key)
        _check(key, value, _rule(key))
        section, _, name = key.rpartition(".")
        (out.setdefault(section, {}) if section else out)[name] = value
    for involved, check in COMBINATIONS:
        if set(involved) <= set(keys):
            problem = check(out)
            if problem:
                raise ParamError(f"params.yaml: {problem}")
    return out


def load(reads: Iterable[str], path: str | Path = "params.yaml") -> dict:
    """Read params.yaml and return the validated params named by `reads`."""
    return validate(read(path), reads)


# Everything a scenario reads: what a tracking run records and what the study checks up front.
SCENARIO = (*(key for key in SCHEMA[None]), *(s for s in SCHEMA if s is not None and s not in STUDY_ONLY))
# What any baseline reads (`contrastlab.methods.baselines`): the probe's protocol, split, settings and features, the
# encoder's design, the images held out for validation, the anchors and the batch size, and the patch baselines'
# settings. No recipe: a baseline is the same reference point for every scenario of a dataset, arch and probe.
BASELINE = (
    "dataset",
    "seed",
    "cpu_kernels",
    "model",
    "split",
    "pairs.anchors_per_class",
    "train.batch_size",
    "embed.batch_size",
    "probe",
    "patches",
)


def validate_all(raw: Any) -> dict:
    """`raw` checked for every key a scenario reads (everything but the study's own section)."""
    return validate(raw, SCENARIO)


def read(path: str | Path) -> Any:
    """params.yaml as parsed YAML, not yet validated."""
    try:
        return yaml.safe_load(Path(path).read_bytes())  # bytes: an encoding error is a YAMLError too
    except FileNotFoundError:
        raise ParamError(f"params.yaml: {path} not found (run from the repository root)") from None
    except IsADirectoryError:
        raise ParamError(f"params.yaml: {path} is a directory, not a file") from None
    except OSError as err:
        raise ParamError(f"params.yaml: cannot read {path} ({err.strerror or err})") from None
    except (yaml.YAMLError, ValueError) as err:  # ValueError: a value Python cannot make (a 13th month, 5000 digits)
        where = getattr(err, "problem_mark", None)
        at = f"line {where.line + 1}, column {where.column + 1}: " if where else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ParamError(
            f"{path} is not valid YAML ({at}{problem}); fix it or `git checkout {path}`".replace("\n", " ")
        ) from None
