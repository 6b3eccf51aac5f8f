"""Read and validate `params.yaml` so that a bad value stops a stage before any work.

Each stage asks for the top-level keys plus its own section. Every value is checked against
the schema below; the first problem becomes one `ParamError` line naming the key, the value
and what is allowed. Method names (datasets, losses, augmentations) are checked against the
registries, so registering a new method is enough to make `-S loss=<name>` valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

AUTO = "auto"
ALL = "all"



def _registered(kind: str) -> list[str]:
    # Imported lazily: the registries pull in torch, which the download stage does not need.
    if kind == "dataset":
        from contrastlab.pipeline.datasets import DATASETS as registry
    elif kind == "loss":
        from contrastlab.methods.losses import LOSSES as registry
    elif kind == "baseline":
        from contrastlab.methods.baselines import BASELINES as registry
    elif kind == "head":
        from contrastlab.methods.encoders import HEADS as registry
    else:
        from contrastlab.methods.augmentations import AUGMENTATIONS as registry
    return sorted(registry)


@dataclass(frozen=True)
class Rule:
    """One key's contract: `check` says whether a value is fine, `allowed` says what would be."""

    allowed: str
    check: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def int_at_least(lo: int, word: str | None = None) -> Rule:
    """An integer >= lo, or the keyword `word` (e.g. 'auto') where one is allowed."""
    prefix = f"'{word}' or " if word else ""
    return Rule(f"{prefix}an integer >= {lo}", lambda v: (word is not None and v == word) or (_is_int(v) and v >= lo))


def positive_number(word: str | None = None) -> Rule:
    """A number > 0, or the keyword `word` (e.g. 'auto') where one is allowed."""
    prefix = f"'{word}' or " if word else ""
    return Rule(f"{prefix}a number > 0", lambda v: (word is not None and v == word) or (_is_number(v) and v > 0))


def number_at_least(lo: float, below: float | None = None) -> Rule:
    upper = f" and < {below}" if below is not None else ""
    return Rule(f"a number >= {lo}{upper}",
                lambda v: _is_number(v) and v >= lo and (below is None or v < below))


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def int_list() -> Rule:
    return Rule("a list of integers (may be empty)", lambda v: isinstance(v, list) and all(_is_int(x) for x in v))


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
    return isinstance(v, dict) and len(v) > 0 and all(
        isinstance(k, str) and isinstance(x, list) and len(x) > 0 for k, x in v.items())


def named_grids() -> Rule:
    return Rule(
        "a mapping of grid names to grids (param names as `-S` takes them -> non-empty lists of values)",
        lambda v: isinstance(v, dict) and len(v) > 0 and all(isinstance(k, str) and _is_grid(g) for k, g in v.items()),
    )


def named_overrides() -> Rule:
    return Rule(
        "a mapping of recipe names to mappings of param names (as `-S` takes them) to values",
        lambda v: isinstance(v, dict) and len(v) > 0 and all(
            isinstance(k, str) and isinstance(o, dict) and all(isinstance(x, str) for x in o) for k, o in v.items()),
    )


def optional_text() -> Rule:
    return Rule("a path (text) or null", lambda v: v is None or isinstance(v, str))


def registered(kind: str) -> Callable[[], Rule]:
    return lambda: one_of(*_registered(kind))


def registered_list(kind: str) -> Callable[[], Rule]:
    return lambda: list_of(*_registered(kind))


SOURCES = ("mirror", "torchvision", "pypi")
PRECISIONS = ("fp32", "bf16")  # bf16: bfloat16 autocast of the encoder's forward passes
NEGATIVES = ("label_aware", "random", "hard")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")

# section -> key -> rule (or a factory for rules that depend on the registries).
SCHEMA: dict[str | None, dict[str, Rule | Callable[[], Rule]]] = {
    None: {
        "dataset": registered("dataset"),
        "loss": registered("loss"),
        "aug": registered("aug"),
        "seed": int_at_least(0),
    },
    "download": {
        "datasets": registered_list("dataset"),
        "mirror": optional_text(),
        "sources": list_of(*SOURCES),
        "digests": optional_text(),
    },
    "pairs": {
        "anchors_per_class": int_at_least(1),
        "negatives": one_of(*NEGATIVES),
        "augment_anchor": boolean(),
    },
    "train": {
        "epochs": int_at_least(1, AUTO),
        "batch_size": int_at_least(1),
        "lr": positive_number(AUTO),
        "views": one_of("fresh", "once"),
        "precision": one_of(*PRECISIONS),
        "head": registered("head"),
        "optimizer": one_of(*OPTIMIZERS),
        "momentum": number_at_least(0, below=1),
        "weight_decay": number_at_least(0),
        "schedule": one_of(*SCHEDULES),
        "warmup_epochs": int_at_least(0),
        "margin": positive_number(),
        "temperature": positive_number(),
        "checkpoint": boolean(),
    },
    "embed": {"batch_size": int_at_least(1), "shifts": int_list()},
    "tsne": {
        "n_points": int_at_least(2, ALL),
        "perplexity": positive_number(),
        "max_iter": int_at_least(250),
    },
    "probe": {
        "test_size": fraction(),
        "knn_k": int_at_least(1),
        "max_iter": int_at_least(1),
        "standardize": boolean(),
    },
    # Read by the study command only, never by a stage: not part of any scenario's params.
    "study": {
        "seeds": int_at_least(1),
        "grids": named_grids(),
        "recipes": named_overrides(),
        "baselines": registered_list("baseline"),
    },
}
STUDY_ONLY = ("study",)


def _check(name: str, value: Any, rule: Rule | Callable[[], Rule]) -> None:
    rule = rule if isinstance(rule, Rule) else rule()
    if not rule.check(value):
        raise ParamError(f"params.yaml: {name}={value!r} is not allowed; expected {rule.allowed}")


def validate(raw: dict, section: str | None, top: bool = True) -> dict:
    """Return `section` of `raw` (and the top-level keys unless `top` is False), checked against SCHEMA."""
    if not isinstance(raw, dict):
        raise ParamError("params.yaml: the file must be a mapping of keys to values")
    out: dict[str, Any] = {}
    for key, rule in SCHEMA[None].items() if top else ():
        if key not in raw:
            raise ParamError(f"params.yaml: missing top-level key '{key}'")
        _check(key, raw[key], rule)
        out[key] = raw[key]
    if section is None:
        return out
    values = raw.get(section)
    if not isinstance(values, dict):
        raise ParamError(f"params.yaml: missing section '{section}'")
    schema = SCHEMA[section]
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise ParamError(
            f"params.yaml: {section}.{unknown[0]} is not a known key; known keys: {', '.join(schema)}"
        )
    for key, rule in schema.items():
        if key not in values:
            raise ParamError(f"params.yaml: missing key '{section}.{key}'")
        _check(f"{section}.{key}", values[key], rule)
    out[section] = dict(values)
    return out


def load(section: str | None, path: str | Path = "params.yaml", top: bool = True) -> dict:
    """Read params.yaml and return one validated section, plus the top-level keys unless `top` is False."""
    return validate(read(path), section, top)


def load_all(path: str | Path = "params.yaml") -> dict:
    """Every section a scenario reads, validated: what a tracking run records."""
    return validate_all(read(path))


def validate_all(raw: dict) -> dict:
    """`raw` checked section by section (without the study's own section)."""
    params = validate(raw, None)
    for section in SCHEMA:
        if section is not None and section not in STUDY_ONLY:
            params.update(validate(raw, section, top=False))
    return params


def read(path: str | Path) -> Any:
    """params.yaml as parsed YAML, not yet validated."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ParamError(f"params.yaml: {path} not found (run from the repository root)") from None
    except yaml.YAMLError as err:
        raise ParamError(f"params.yaml: not valid YAML ({err})".replace("\n", " ")) from None


def scenario_name(params: dict) -> str:
    """The scenario's name everywhere it is shown: `<dataset>-<loss>-<aug>`."""
    return f"{params['dataset']}-{params['loss']}-{params['aug']}"
