import copy
from pathlib import Path

import pytest
import yaml

from contrastlab.infra.errors import ParamError
from contrastlab.infra.params import load, load_all, scenario_name, validate

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
DEFAULTS = yaml.safe_load(PARAMS.read_text())


def with_value(key: str, value):
    raw = copy.deepcopy(DEFAULTS)
    *sections, last = key.split(".")
    target = raw
    for s in sections:
        target = target[s]
    target[last] = value
    return raw


def test_repository_defaults_are_the_protocol():
    p = load_all(PARAMS)
    assert (p["dataset"], p["loss"], p["aug"]) == ("mnist", "triplet", "simclr")
    assert p["pairs"]["anchors_per_class"] == 5000
    assert p["train"]["batch_size"] == 1024 and p["train"]["views"] == "fresh"
    assert p["train"]["precision"] == "fp32" and p["train"]["head"] == "sigmoid"
    assert (p["train"]["optimizer"], p["train"]["momentum"], p["train"]["weight_decay"]) == ("sgd", 0.0, 0.0)
    assert (p["train"]["schedule"], p["train"]["warmup_epochs"], p["train"]["margin"]) == ("constant", 0, 1.0)
    assert (p["pairs"]["negatives"], p["pairs"]["augment_anchor"]) == ("label_aware", False)
    assert p["train"]["epochs"] == "auto" and p["train"]["lr"] == "auto"
    assert p["tsne"]["n_points"] == 1000 and p["tsne"]["perplexity"] == 20
    assert p["probe"]["test_size"] == 0.2 and p["probe"]["knn_k"] == 30
    assert scenario_name(p) == "mnist-triplet-simclr"


@pytest.mark.parametrize(
    "key, value, section, message",
    [
        ("aug", "simclar", "train", "aug='simclar' is not allowed; expected one of none, pad_rotate_scale, simclr"),
        ("loss", "quadruplet", "pairs",
         "loss='quadruplet' is not allowed; expected one of contrastive, ntxent, pairwise, supcon, triplet"),
        ("pairs.negatives", "hardest", "pairs",
         "pairs.negatives='hardest' is not allowed; expected one of label_aware, random, hard"),
        ("pairs.augment_anchor", "yes", "pairs", "pairs.augment_anchor='yes' is not allowed; expected true or false"),
        ("train.head", "tanh", "train", "train.head='tanh' is not allowed; expected one of l2, sigmoid"),
        ("train.optimizer", "adam", "train", "train.optimizer='adam' is not allowed; expected one of sgd, adamw"),
        ("train.momentum", 1.0, "train", "train.momentum=1.0 is not allowed; expected a number >= 0 and < 1"),
        ("train.weight_decay", -0.1, "train", "train.weight_decay=-0.1 is not allowed; expected a number >= 0"),
        ("train.schedule", "step", "train", "expected one of constant, cosine, onecycle"),
        ("train.warmup_epochs", 0.5, "train", "train.warmup_epochs=0.5 is not allowed; expected an integer >= 0"),
        ("train.temperature", 0, "train", "train.temperature=0 is not allowed; expected a number > 0"),
        ("embed.shifts", [3, "6"], "embed", "embed.shifts=[3, '6'] is not allowed; expected a list of integers"),
        ("train.epochs", -1, "train", "train.epochs=-1 is not allowed; expected 'auto' or an integer >= 1"),
        ("train.batch_size", 0, "train", "train.batch_size=0 is not allowed; expected an integer >= 1"),
        ("train.batch_size", "big", "train", "train.batch_size='big' is not allowed"),
        ("train.lr", True, "train", "train.lr=True is not allowed; expected 'auto' or a number > 0"),
        ("train.views", "twice", "train", "expected one of fresh, once"),
        ("train.precision", "fp16", "train", "train.precision='fp16' is not allowed; expected one of fp32, bf16"),
        ("probe.test_size", 1.5, "probe", "probe.test_size=1.5 is not allowed; expected a number strictly between 0 and 1"),
        ("seed", 1.5, "embed", "seed=1.5 is not allowed; expected an integer >= 0"),
        ("download.sources", ["ftp"], "download", "download.sources=['ftp'] is not allowed"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(key, value, section, message):
    with pytest.raises(ParamError) as err:
        validate(with_value(key, value), section)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_and_missing_keys_are_named():
    raw = with_value("train.epocs", 3)
    with pytest.raises(ParamError, match="train.epocs is not a known key"):
        validate(raw, "train")
    raw = copy.deepcopy(DEFAULTS)
    del raw["probe"]["knn_k"]
    with pytest.raises(ParamError, match="missing key 'probe.knn_k'"):
        validate(raw, "probe")


def test_a_stage_sees_only_its_own_section_and_the_top_level():
    p = load("train", PARAMS)
    assert set(p) == {"dataset", "loss", "aug", "seed", "train"}
    assert set(load("download", "params.yaml", top=False)) == {"download"}


def test_download_ignores_a_bad_top_level_value():
    # A typo in `aug` must not stop the download stage, which does not read it.
    assert validate(with_value("aug", "simclar"), "download", top=False)["download"]["mirror"]


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamError, match="not found"):
        load("train", tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("dataset: [mnist\n")
    with pytest.raises(ParamError, match="not valid YAML"):
        load("train", tmp_path / "params.yaml")
