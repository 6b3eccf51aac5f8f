import copy
import math
import re
import resource
import subprocess
import sys
import time

import pytest
import yaml

from contrastlab.infra.errors import ParamError
from contrastlab.infra.params import (
    BASELINE,
    COMBINATIONS,
    NARROWEST_IMAGE,
    REGISTRIES,
    SCENARIO,
    SCHEMA,
    load,
    registry,
    registry_modules,
    validate,
)
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.methods.encoders import ARCHS, HEADS
from contrastlab.methods.losses import LOSSES
from contrastlab.pipeline.datasets import DATASETS
from project import committed_params, committed_params_text, write_committed_params

DEFAULTS = committed_params()
TOP = ("dataset", "loss", "aug", "seed")


def with_value(key: str, value):
    raw = copy.deepcopy(DEFAULTS)
    *sections, last = key.split(".")
    target = raw
    for s in sections:
        target = target[s]
    target[last] = value
    return raw


def names(registry_dict) -> str:
    return ", ".join(sorted(registry_dict))


def test_repository_defaults_are_the_protocol():
    p = validate(DEFAULTS, SCENARIO)
    assert (p["dataset"], p["loss"], p["aug"]) == ("mnist", "triplet", "simclr")
    assert p["pairs"]["anchors_per_class"] == 5000
    assert p["train"]["batch_size"] == 1024 and p["train"]["views"] == "fresh"
    assert p["train"]["precision"] == "fp32" and p["train"]["head"] == "sigmoid"
    assert (p["train"]["device"], p["train"]["deterministic"]) == ("auto", True)  # CONTRASTLAB_DEVICE, else a GPU
    assert (p["train"]["optimizer"], p["train"]["momentum"], p["train"]["weight_decay"]) == ("sgd", 0.0, 0.0)
    assert (p["train"]["schedule"], p["train"]["warmup_epochs"], p["train"]["margin"]) == ("constant", 0, 1.0)
    assert (p["pairs"]["negatives"], p["pairs"]["augment_anchor"]) == ("label_aware", False)
    assert p["train"]["epochs"] == "auto" and p["train"]["lr"] == "auto"
    assert p["tsne"]["n_points"] == 1000 and p["tsne"]["perplexity"] == 20
    assert p["probe"]["test_size"] == 0.2 and p["probe"]["knn_k"] == 30
    assert p["model"] == {"arch": "study", "embedding_dim": 32} and p["probe"]["features"] == "embedding"
    assert p["probe"]["protocol"] == "study"  # the reference study's 80/20 split of the test images
    assert p["patches"] == {"centroids": 64, "size": 6}  # 4 x 64 = 256 features, as the encoders' backbone
    assert (
        p["cpu_kernels"] == "native"
    )  # the fastest kernels: portable ones are a choice (README, "Same seed, same numbers")


@pytest.mark.parametrize(
    "key, value, section, message",
    [
        ("aug", "simclar", "train", f"aug='simclar' is not allowed; expected one of {names(AUGMENTATIONS)}"),
        ("loss", "quadruplet", "pairs", f"loss='quadruplet' is not allowed; expected one of {names(LOSSES)}"),
        (
            "pairs.negatives",
            "hardest",
            "pairs",
            "pairs.negatives='hardest' is not allowed; expected one of label_aware, random, hard",
        ),
        ("pairs.augment_anchor", "yes", "pairs", "pairs.augment_anchor='yes' is not allowed; expected true or false"),
        ("train.head", "tanh", "train", f"train.head='tanh' is not allowed; expected one of {names(HEADS)}"),
        ("train.optimizer", "adam", "train", "train.optimizer='adam' is not allowed; expected one of sgd, adamw"),
        ("train.momentum", 1.0, "train", "train.momentum=1.0 is not allowed; expected a finite number >= 0 and < 1"),
        ("train.weight_decay", -0.1, "train", "train.weight_decay=-0.1 is not allowed; expected a finite number >= 0"),
        ("train.schedule", "step", "train", "expected one of constant, cosine, onecycle"),
        (
            "train.warmup_epochs",
            0.5,
            "train",
            "train.warmup_epochs=0.5 is not allowed; expected an integer >= 0 and <= 10000",
        ),
        ("train.temperature", 0, "train", "train.temperature=0 is not allowed; expected a finite number > 0"),
        (
            "embed.shifts",
            [3, "6"],
            "embed",
            "embed.shifts=[3, '6'] is not allowed; expected a list of integers >= -27 and <= 27",
        ),
        (
            "train.epochs",
            -1,
            "train",
            "train.epochs=-1 is not allowed; expected 'auto' or an integer >= 1 and <= 10000",
        ),
        ("train.batch_size", 0, "train", "train.batch_size=0 is not allowed; expected an integer >= 1 and <= 1000000"),
        ("train.batch_size", "big", "train", "train.batch_size='big' is not allowed"),
        ("train.lr", True, "train", "train.lr=True is not allowed; expected 'auto' or a finite number > 0"),
        ("train.views", "twice", "train", "expected one of fresh, once"),
        ("train.precision", "fp8", "train", "train.precision='fp8' is not allowed; expected one of fp32, bf16, fp16"),
        ("train.compile", "yes", "train", "train.compile='yes' is not allowed; expected true or false"),
        (
            "probe.test_size",
            1.5,
            "probe",
            "probe.test_size=1.5 is not allowed; expected a number strictly between 0 and 1",
        ),
        ("seed", 1.5, "embed", "seed=1.5 is not allowed; expected an integer >= 0 and <= 4294967295"),
        ("download.sources", ["ftp"], "download", "download.sources=['ftp'] is not allowed"),
        ("model.arch", "resnet50", "model", f"model.arch='resnet50' is not allowed; expected one of {names(ARCHS)}"),
        (
            "model.embedding_dim",
            0,
            "model",
            "model.embedding_dim=0 is not allowed; expected an integer >= 1 and <= 4096",
        ),
        (
            "probe.features",
            "pixels",
            "probe",
            "probe.features='pixels' is not allowed; expected one of embedding, backbone",
        ),
        ("train.lr", [1], "train", "train.lr=[1] is not allowed; expected 'auto' or a finite number > 0"),
        ("train.lr", {"auto": 1}, "train", "train.lr={'auto': 1} is not allowed"),
        ("train.lr", float("inf"), "train", "train.lr=inf is not allowed; expected 'auto' or a finite number > 0"),
        ("train.weight_decay", float("nan"), "train", "train.weight_decay=nan is not allowed"),
        ("tsne.perplexity", float("nan"), "tsne", "tsne.perplexity=nan is not allowed"),
        ("probe.test_size", float("nan"), "probe", "probe.test_size=nan is not allowed"),
        ("probe.knn_k", 0, "probe", "probe.knn_k=0 is not allowed; expected an integer >= 1"),
        (
            "train.batch_size",
            1e12,
            "train",
            "train.batch_size=1000000000000.0 is not allowed; expected an integer >= 1 and <= 1000000",
        ),
        ("train.batch_size", 1024.0, "train", "train.batch_size=1024.0 is not allowed"),
        ("dataset", ["mnist"], "train", "dataset=['mnist'] is not allowed; expected one of"),
        (
            "probe.protocol",
            "linear",
            "probe",
            "probe.protocol='linear' is not allowed; expected one of study, standard",
        ),
        *(
            ("patches.centroids", bad, "patches", f"patches.centroids={bad!r} is not allowed; expected an integer >= 1")
            for bad in (0, -1, 2.5, True, "a")
        ),
        ("patches.size", 0, "patches", "patches.size=0 is not allowed; expected an integer >= 1 and <= 28"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(key, value, section, message):
    with pytest.raises(ParamError) as err:
        validate(with_value(key, value), (*TOP, section))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


# key -> the largest value allowed, checked by hand
UPPER_BOUNDS = {
    "seed": 2**32 - 1,  # scikit-learn's t-SNE takes seeds below 2**32
    "model.embedding_dim": 4096,
    "pairs.anchors_per_class": 1_000_000,
    "train.epochs": 10_000,
    "train.batch_size": 1_000_000,
    "train.warmup_epochs": 10_000,
    "embed.batch_size": 1_000_000,
    "tsne.perplexity": 10_000,
    "tsne.max_iter": 1_000_000,
    "probe.max_iter": 1_000_000,
    "patches.size": 28,  # a patch as wide as MNIST's images (NARROWEST_IMAGE)
    "study.seeds": 1000,
}


@pytest.mark.parametrize("key, most", UPPER_BOUNDS.items())
def test_each_upper_bound_allows_its_value_and_refuses_the_next(key, most):
    assert validate(with_value(key, most), (key,))
    with pytest.raises(ParamError) as err:
        validate(with_value(key, most + 1), (key,))
    assert re.fullmatch(rf"params.yaml: {key}={most + 1} is not allowed; expected .* and <= {most}", str(err.value))


def test_a_float_bound_refuses_the_next_float():
    assert validate(with_value("tsne.perplexity", 10_000.0), ("tsne",))
    with pytest.raises(
        ParamError,
        match=r"tsne.perplexity=10000.000000000002 is not allowed; expected a finite "
        r"number > 0 and <= 10000$",
    ):
        validate(with_value("tsne.perplexity", math.nextafter(10_000.0, math.inf)), ("tsne",))


def test_learning_rates_have_no_upper_bound_but_must_be_finite():
    """A huge rate is allowed to train and diverge: training says so, with the epoch and step."""
    assert validate(with_value("train.lr", 1e38), ("train",))["train"]["lr"] == 1e38
    assert validate(with_value("train.lr", 1.7e308), ("train",))["train"]["lr"] == 1.7e308
    for bad in (float("inf"), float("nan"), 0, -1e-9):
        with pytest.raises(ParamError):
            validate(with_value("train.lr", bad), ("train",))


def test_probe_test_size_is_strictly_between_0_and_1():
    for fine in (math.nextafter(0, 1), 0.5, math.nextafter(1, 0)):
        assert validate(with_value("probe.test_size", fine), ("probe",))
    for bad in (0, 1, 1.0, 1.5, -0.2):
        with pytest.raises(ParamError) as err:
            validate(with_value("probe.test_size", bad), ("probe",))
        assert str(err.value) == (
            f"params.yaml: probe.test_size={bad!r} is not allowed; expected a number strictly between 0 and 1"
        )


def test_shifts_leave_part_of_the_narrowest_image():
    assert NARROWEST_IMAGE == min(spec.size for spec in DATASETS.values())
    most = NARROWEST_IMAGE - 1
    assert validate(with_value("embed.shifts", [-most, 0, most]), ("embed",))
    for bad in ([most + 1], [-most - 1], [40]):
        with pytest.raises(ParamError) as err:
            validate(with_value("embed.shifts", bad), ("embed",))
        assert str(err.value) == (
            f"params.yaml: embed.shifts={bad!r} is not allowed; "
            f"expected a list of integers >= {-most} and <= {most} (may be empty)"
        )


def test_warm_up_must_end_before_training_unless_onecycle_ignores_it():
    raw = with_value("train.epochs", 10)
    raw["train"]["warmup_epochs"] = 9
    assert validate(raw, ("train",))
    raw["train"]["warmup_epochs"] = 10
    with pytest.raises(ParamError) as err:
        validate(raw, ("train",))
    assert str(err.value) == (
        "params.yaml: train.warmup_epochs=10 but training lasts only train.epochs=10, so the "
        "learning rate would never reach train.lr; use at most 9"
    )
    assert validate(raw, ("train.warmup_epochs", "train.epochs"))  # the check needs the schedule too
    raw["train"]["schedule"] = "onecycle"
    assert validate(raw, ("train",))
    raw["train"].update(schedule="constant", epochs="auto", warmup_epochs=10_000)
    assert validate(raw, ("train",))  # the length of an 'auto' run is decided by the loss, in training


def test_a_section_that_is_not_a_mapping_is_named_with_its_value():
    with pytest.raises(ParamError) as err:
        validate({**DEFAULTS, "train": [1]}, ("train.lr",))
    assert str(err.value) == "params.yaml: train=[1] is not allowed; expected a section of keys and values"
    with pytest.raises(ParamError, match="^params.yaml: missing section 'train'$"):
        validate({**DEFAULTS, "train": None}, ("train.lr",))


def test_unknown_keys_of_any_type_are_named():
    raw = copy.deepcopy(DEFAULTS)
    raw["train"].update({1: "x", "epocs": 3})
    with pytest.raises(ParamError, match=r"^params.yaml: train.1 is not a known key"):
        validate(raw, ("train",))


def test_unknown_and_missing_keys_are_named():
    raw = with_value("train.epocs", 3)
    with pytest.raises(ParamError, match="train.epocs is not a known key"):
        validate(raw, ("train",))
    raw = copy.deepcopy(DEFAULTS)
    del raw["probe"]["knn_k"]
    with pytest.raises(ParamError, match="missing key 'probe.knn_k'"):
        validate(raw, ("probe",))
    del raw["seed"]
    with pytest.raises(ParamError, match="missing top-level key 'seed'"):
        validate(raw, ("seed",))


def test_a_stage_gets_exactly_what_it_reads(tmp_path):
    path = write_committed_params(tmp_path)
    assert load(("dataset", "seed", "train"), path).keys() == {"dataset", "seed", "train"}
    assert load(("download",), path).keys() == {"download"}
    single = load(("seed", "train.batch_size", "probe"), path)
    assert single == {"seed": 0, "train": {"batch_size": 1024}, "probe": DEFAULTS["probe"]}


def test_a_key_nobody_reads_is_not_checked():
    # A typo in `aug` must not stop the download stage, which does not read it.
    assert validate(with_value("aug", "simclar"), ("download",))["download"]["mirror"]
    # ...nor a typo elsewhere in a section of which a stage reads one key only
    assert validate(with_value("train.epocs", 3), ("train.batch_size",)) == {"train": {"batch_size": 1024}}


def test_reading_a_name_that_is_not_in_the_schema_is_a_programming_error():
    with pytest.raises(ValueError, match="'train.lrr' is neither a key nor a section"):
        validate(DEFAULTS, ("train.lrr",))


def test_every_registry_of_the_table_is_a_registry_of_names():
    for kind in REGISTRIES:
        assert registry(kind) and all(isinstance(name, str) for name in registry(kind))


def test_only_what_a_stage_reads_decides_which_registries_it_imports():
    assert registry_modules(("dataset", "download")) == {REGISTRIES["dataset"][0]}  # the download stage
    assert registry_modules(("seed", "tsne", "probe")) == set()
    assert registry_modules(("loss", "train")) == {REGISTRIES["loss"][0], REGISTRIES["head"][0]}
    assert registry_modules(SCENARIO) == {REGISTRIES[kind][0] for kind in ("dataset", "loss", "aug", "head")}


@pytest.mark.parametrize("loss", [name for name, loss in LOSSES.items() if loss.examples != "triplets"])
def test_hard_negatives_without_triplets_are_refused_by_every_stage_that_reads_both(loss):
    raw = with_value("pairs.negatives", "hard")
    raw["loss"] = loss
    message = "params.yaml: pairs.negatives='hard' mines semi-hard negatives for triplets; use it with loss=triplet"
    for reads in (("loss", "pairs"), SCENARIO):
        with pytest.raises(ParamError) as err:
            validate(raw, reads)
        assert str(err.value) == message
    assert validate(raw, ("pairs",))  # a stage that does not read the loss has no combination to check


def test_random_negatives_with_two_view_losses_name_every_such_loss():
    two_view = [name for name, loss in LOSSES.items() if loss.examples == "views"]
    raw = with_value("pairs.negatives", "random")
    raw["loss"] = two_view[0]
    with pytest.raises(ParamError, match=rf"two-view losses \({', '.join(two_view)}\)"):
        validate(raw, ("loss", "pairs.negatives"))
    raw["loss"] = "triplet"
    assert validate(raw, ("loss", "pairs.negatives"))["pairs"]["negatives"] == "random"


def test_small_crops_need_a_two_view_loss_and_an_encoder_of_any_input_size():
    raw = with_value("train.small_crops", 4)
    raw["loss"] = "triplet"
    with pytest.raises(
        ParamError,
        match=r"train.small_crops=4 adds views for two-view losses \(ntxent, .*\); "
        "loss=triplet trains on triplets: set train.small_crops: 0 or a two-view loss",
    ):
        validate(raw, SCENARIO)
    raw["loss"] = "ntxent"
    with pytest.raises(ParamError, match="model.arch=study reads a map of one size: use vgg_small, airbench"):
        validate(raw, SCENARIO)
    raw["model"]["arch"] = "airbench"
    assert validate(raw, SCENARIO)["train"]["small_crops"] == 4


def test_vicreg_refuses_a_head_whose_embeddings_cannot_spread():
    raw = with_value("loss", "vicreg")
    with pytest.raises(ParamError) as err:
        validate(raw, SCENARIO)
    assert str(err.value) == (
        "params.yaml: loss=vicreg cannot learn through train.head=sigmoid (vicreg asks each "
        "embedding coordinate's std to reach 1, which sigmoid and l2 embeddings cannot); set "
        "train.head: linear"
    )
    raw["train"]["head"] = "linear"
    assert validate(raw, SCENARIO)["loss"] == "vicreg"


def test_an_arch_with_a_fixed_embedding_size_refuses_another():
    raw = with_value("model.embedding_dim", 64)
    with pytest.raises(ParamError) as err:
        validate(raw, ("model",))
    assert str(err.value) == (
        "params.yaml: model.arch='study' always embeds to 32 dimensions; set model.embedding_dim: 32 or another arch"
    )
    raw["model"]["arch"] = next(name for name, arch in ARCHS.items() if arch.embedding_dim is None)
    assert validate(raw, ("model",))["model"]["embedding_dim"] == 64


def test_every_combination_names_keys_of_the_schema_and_baselines_read_real_keys():
    for keys, _ in COMBINATIONS:
        validate(DEFAULTS, keys)
    validate(DEFAULTS, BASELINE)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamError, match="not found"):
        load(("train",), tmp_path / "params.yaml")
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\ntrain:\n  lr: 0.1\n epochs: 3\n")
    with pytest.raises(ParamError) as err:
        load(("train",), path)
    assert str(err.value) == (
        f"{path} is not valid YAML (line 4, column 2: expected <block end>, but found "
        f"'<block mapping start>'); fix it or `git checkout {path}`"
    )
    path.write_bytes(b"seed: \xc3\x28\n")  # not UTF-8
    with pytest.raises(ParamError, match=r"is not valid YAML \(.*invalid continuation byte.*\); fix it") as err:
        load(("seed",), path)
    assert "\n" not in str(err.value)


def stage_says(path, reads) -> str:
    """What a stage that reads `reads` from params file `path` prints, run as a stage (`infra.stage.run_stage`) in a
    process of its own with a time and a memory limit: a check that never ends fails the test instead of hanging it
    or filling the machine's memory."""
    code = (
        "import sys; from contrastlab.infra import params; from contrastlab.infra.stage import run_stage; "
        "run_stage(lambda: params.load(sys.argv[2:], sys.argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path), *reads],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30)),
    )
    assert result.returncode == 2 and result.stdout == "", result.stdout + result.stderr
    return result.stderr


def alias_chain(levels: int) -> str:
    """`embed.shifts` as a list whose k-th item is 9 aliases of the (k-1)-th: a few lines that expand to 9**levels."""
    items = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, levels)]
    return committed_params_text().replace("  shifts:", f"  shifts: [{', '.join(items)}]  # was:", 1)


def test_a_yaml_alias_chain_is_refused_in_one_line_without_expanding_it(tmp_path):
    """Nine levels expand to 9**9 values: printing them in the message (or any walk over them) never ended."""
    path = tmp_path / "params.yaml"
    path.write_text(alias_chain(9))
    start = time.perf_counter()
    assert stage_says(path, ["embed"]) == (
        "error: params.yaml: the document expands to more than 100000 values (a YAML "
        "alias chain?); write the values out instead\n"
    )
    assert time.perf_counter() - start < 30


def test_a_bad_value_is_shown_cut_short():
    """Three levels of aliases are only 922 values, but the message printed every one of them (5.4 kB on one line)."""
    chain = yaml.safe_load(alias_chain(3))
    with pytest.raises(ParamError) as err:
        validate(chain, ("embed",))
    assert str(err.value) == (
        "params.yaml: embed.shifts=[[1, 1, 1, 1, 1, 1, ...], [[1, 1, 1, 1, 1, 1, ...], [1, 1, 1, "
        "1, 1, 1, ...], ... is not allowed; expected a list of integers >= -27 and <= 27 (may be "
        "empty)"
    )
    with pytest.raises(
        ParamError, match=r"^params.yaml: train=\['x', 'x', 'x', 'x', 'x', 'x', \.\.\.\] is not allowed"
    ):
        validate({**DEFAULTS, "train": ["x"] * 1000}, ("train.lr",))


def test_an_unknown_top_level_key_is_refused_by_every_validation_with_the_closest_known_key():
    raw = {**DEFAULTS, "sead": 3}
    known = ", ".join([*SCHEMA[None], *(section for section in SCHEMA if section)])
    for reads in (("download",), ("seed",), SCENARIO):
        with pytest.raises(ParamError) as err:
            validate(raw, reads)
        assert str(err.value) == f"params.yaml: sead is not a known key (did you mean 'seed'?); known keys: {known}"
    with pytest.raises(ParamError) as err:
        validate({**DEFAULTS, 7: "x"}, ("seed",))
    assert str(err.value) == f"params.yaml: 7 is not a known key; known keys: {known}"


def test_params_yaml_that_cannot_be_read_is_one_line_with_the_reason(tmp_path):
    folder = tmp_path / "params.yaml"
    folder.mkdir()
    with pytest.raises(ParamError) as err:
        load(("seed",), folder)
    assert str(err.value) == f"params.yaml: {folder} is a directory, not a file"
    too_long = tmp_path / ("p" * 300)
    with pytest.raises(ParamError) as err:
        load(("seed",), too_long)
    assert str(err.value) == f"params.yaml: cannot read {too_long} (File name too long)"
    assert stage_says(folder, ["seed"]) == f"error: params.yaml: {folder} is a directory, not a file\n"


def test_a_yaml_value_python_cannot_make_is_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 2024-13-45\n")  # a date with a 13th month: PyYAML's constructor raised a ValueError
    with pytest.raises(ParamError, match=r"is not valid YAML \(month must be in 1\.\.12\); fix it"):
        load(("seed",), path)
