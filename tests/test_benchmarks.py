"""The benchmark's yardsticks: FLOP counted by hand, and a notebook-style path that trains what the project trains;
BENCHMARKS.md: a headline first, and each generator rewriting only its own marked section."""

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_archs  # noqa: E402
import bench_convolutions  # noqa: E402
import bench_kernels  # noqa: E402
import bench_multicrop  # noqa: E402
import bench_pipeline  # noqa: E402
import bench_training  # noqa: E402
import notebook_style  # noqa: E402
import sections  # noqa: E402

from contrastlab.pipeline.examples import build  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
LABELS = np.repeat(np.arange(10), 4)


def test_training_flop_per_image_counted_by_hand():
    # Forward multiply-adds per convolution: output elements x (in channels x 2 x 2).
    mnist = 32 * 15 * 15 * 4 + 64 * 8 * 8 * 128 + 128 * 5 * 5 * 256 + 256 * 3 * 3 * 512 + 8 * 2 * 2 * 1024
    cifar = 32 * 17 * 17 * 12 + 64 * 9 * 9 * 128 + 128 * 5 * 5 * 256 + 256 * 3 * 3 * 512 + 8 * 2 * 2 * 1024
    assert bench_training.training_flop_per_image(1, 28) == 6 * mnist == 15_508_224  # the issue's 15.5 MFLOP
    assert bench_training.training_flop_per_image(3, 32) == 6 * cifar


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
@pytest.mark.parametrize("aug", ["none", "pad_rotate_scale", "simclr"])
def test_study_transforms_give_normalised_images_of_the_input_size(aug, channels, size):
    image = RNG.integers(0, 256, (channels, size, size), dtype=np.uint8)
    out = notebook_style.study_transform(aug, size)(notebook_style.to_pil(image))
    assert out.shape == (channels, size, size)
    assert out.min() >= -1 and out.max() <= 1
    if aug == "none":
        assert torch.allclose(out, torch.from_numpy(image) / 127.5 - 1, atol=1e-6)


@pytest.mark.parametrize(("layout", "members"), [("triplets", 3), ("pairs", 2)])
def test_notebook_dataset_holds_one_tuple_per_example(layout, members):
    images = RNG.integers(0, 256, (len(LABELS), 1, 28, 28), dtype=np.uint8)
    examples = build(LABELS, layout, 4, seed=0)
    dataset = notebook_style.build_dataset(images, examples, "simclr")
    assert len(dataset) == len(examples["target"])
    assert {len(row) for row in dataset} == {members + (layout == "pairs")}  # pairs carry their target

    def plain(index):
        return torch.from_numpy(images[index]) / 127.5 - 1

    first, second = examples["members"][0, :2]
    assert torch.allclose(dataset[0][0], plain(first), atol=1e-6)  # anchors are not augmented
    assert not torch.allclose(dataset[0][1], plain(second), atol=1e-2)  # the positive is a SimCLR view
    last = examples["members"][-1]
    assert torch.allclose(dataset[-1][members - 1], plain(last[-1]), atol=1e-6)  # negatives are not augmented
    if layout == "pairs":
        assert sorted({float(row[2]) for row in dataset}) == [-1.0, 1.0]


def test_notebook_training_counts_the_images_it_embeds():
    images = RNG.integers(0, 256, (len(LABELS), 1, 28, 28), dtype=np.uint8)
    dataset = notebook_style.build_dataset(images, build(LABELS, "triplets", 4, seed=0), "none")
    seen, seconds = notebook_style.train_steps(dataset, "triplet", 1, 0.1, batch_size=8, max_steps=3)
    assert seen == 3 * 8 * 3 and seconds > 0
    seen, _ = notebook_style.train_steps(dataset, "triplet", 1, 0.1, batch_size=8, epochs=2)
    assert seen == 2 * len(dataset) * 3


def test_notebook_way_runs_in_a_process_of_its_own():
    images = RNG.integers(0, 256, (len(LABELS), 1, 28, 28), dtype=np.uint8)
    examples = build(LABELS, "triplets", 4, seed=0)
    worker = bench_training.NotebookProcess()
    assert worker.build(images, examples, "none") > 0
    seen, seconds = worker.train_steps("triplet", 1, 0.1, batch_size=8, max_steps=3)
    assert seen == 3 * 8 * 3 and seconds > 0
    assert worker.pool.submit(os.getpid).result() != os.getpid()
    worker.pool.shutdown()


def test_pipeline_benchmark_reports_the_peak_memory_of_a_grandchild(tmp_path):
    # As DVC runs a stage: the measured command starts a shell that starts the memory-hungry process.
    allocate = f"{sys.executable} -c 'import time; block = bytearray(300 * 2**20); time.sleep(0.2)'"
    seconds, peak_mb = bench_pipeline.run(["sh", "-c", allocate], tmp_path, env=dict(os.environ))
    assert seconds >= 0.2
    assert 300 <= peak_mb < 400


def test_pipeline_benchmark_times_each_stage_from_its_start_to_the_next(tmp_path):
    # b's line also carries c's, as when a stage prints no newline at its end
    script = (
        "echo starting; sleep 0.3; echo \"Running stage 'a':\"; sleep 0.6; "
        "printf \"\\033[2KRunning stage 'b':progress Running stage 'c':\\n\"; sleep 0.2"
    )
    wall, stages = bench_pipeline.timed_stages(["sh", "-c", script], tmp_path, env=dict(os.environ))
    assert list(stages) == ["a", "b", "c"]
    assert stages["a"] == pytest.approx(0.6, abs=0.15) and stages["c"] == pytest.approx(0.2, abs=0.15)
    assert stages["b"] < 0.05
    assert wall - sum(stages.values()) == pytest.approx(0.3, abs=0.15)  # before the first stage


def test_the_stages_that_train_an_encoder_are_the_scenarios_and_the_ceilings():
    assert bench_pipeline.TRAINING_STAGES == ("train", "baseline@supervised", "baseline@supervised_tuned")


def test_convolution_benchmark_finds_each_strided_convolution_and_its_input_size():
    # sizes by hand: pad 1 on each side, then whole 2x2 patches (an odd padded size leaves its last row out)
    assert bench_convolutions.strided_inputs(1, 28) == [(1, 32, 28), (32, 64, 15), (64, 128, 8), (128, 256, 5)]
    assert bench_convolutions.strided_inputs(3, 32) == [(3, 32, 32), (32, 64, 17), (64, 128, 9), (128, 256, 5)]


def test_a_step_of_the_convolution_benchmark_takes_the_chosen_datasets_images(monkeypatch):
    monkeypatch.setattr(bench_convolutions, "BATCH", 2)
    monkeypatch.setattr(bench_convolutions, "keep_freed_memory", lambda: None)  # the test process's allocator as is
    for dataset in bench_convolutions.SHAPES:  # an encoder for another image size or channel count would not run
        timed = bench_convolutions.time_step(False, False, 1, dataset=dataset)
        assert timed["step_ms"] > 0 and timed["first_s"] > 0


def test_the_training_benchmark_times_only_what_the_notebook_way_knows():
    from contrastlab.methods.augmentations import AUGMENTATIONS

    assert set(bench_training.STUDY_AUGS) <= set(AUGMENTATIONS)  # "shift_flip" has no notebook pipeline
    for aug in bench_training.STUDY_AUGS:
        notebook_style.study_transform(aug, 28)


def test_a_compiled_scenario_runs_first_with_an_empty_cache_then_with_the_cache_it_left(monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/the/users/cache")
    runs = []

    def record(*args, **settings):
        cache = os.environ["TORCHINDUCTOR_CACHE_DIR"]
        runs.append((cache, sorted(os.listdir(cache)), settings["precision"], settings["compile"]))
        Path(cache, f"compiled-{len(runs)}").touch()  # what a compile leaves there
        return len(runs)

    monkeypatch.setattr(bench_training, "time_project", record)
    assert bench_training.time_compiled_twice(None, {}, "bf16") == (1, 2)
    (first_cache, first_files, *first), (second_cache, second_files, *second) = runs
    assert first_cache == second_cache != "/the/users/cache" and first == second == ["bf16", True]
    assert (first_files, second_files) == ([], ["compiled-1"])  # empty, then kept
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/the/users/cache"  # the user's cache untouched
    assert not Path(first_cache).exists()


def test_the_drift_benchmark_reports_one_mean_per_block_of_steps(monkeypatch):
    import bench_step_drift

    monkeypatch.setattr(bench_step_drift, "BATCH", 2)
    monkeypatch.setattr(bench_step_drift, "keep_freed_memory", lambda: None)
    means = bench_step_drift.block_means("mnist", False, 25)  # blocks of 10, 10 and 5 steps
    assert len(means) == 3 and all(m > 0 for m in means)


def test_a_function_run_in_a_fresh_process_returns_its_result():
    assert bench_convolutions.in_fresh_process("bench_convolutions", "strided_inputs", 3, 32) == [
        [3, 32, 32],
        [32, 64, 17],
        [64, 128, 9],
        [128, 256, 5],
    ]  # by JSON, as lists


def test_the_kernels_benchmark_trains_with_the_asked_kernels_and_hashes_the_encoder(tmp_path, monkeypatch):
    emulated_cpus = []

    def train_stage(name, *args, cwd, emulated):  # what the train stage would leave, from the params it was given
        emulated_cpus.append(emulated)
        kernels = yaml.safe_load((cwd / "params.yaml").read_text())["cpu_kernels"]
        (cwd / "encoder.pt").write_bytes(kernels.encode())
        (cwd / "train.json").write_text(json.dumps({"train_time_s": 2.5, "final_loss": 0.25}))

    monkeypatch.setattr(bench_kernels, "stage", train_stage)
    run = bench_kernels.train_once(tmp_path, {"dataset": "mnist", "cpu_kernels": "native"}, "portable", "EPYC-Rome")
    assert run == {
        "kernels": "portable",
        "train_time_s": 2.5,
        "final_loss": 0.25,
        "md5": hashlib.md5(b"portable").hexdigest(),
    }
    assert emulated_cpus == ["EPYC-Rome"]


# BENCHMARKS.md: each generator rewrites only its own marked section; the rest is written by hand.

OWNER = "benchmarks/bench_training.py"
BEGIN, END = sections.markers(OWNER)
OTHER_BEGIN, OTHER_END = sections.markers("benchmarks/bench_pipeline.py")
GENERATORS = (bench_training, bench_pipeline, bench_archs, bench_multicrop)


def test_a_generator_replaces_only_its_own_section_and_keeps_every_other_byte(tmp_path):
    before = f"# Hand-written\r\n\ntrailing spaces   \n\n{OTHER_BEGIN}\ntheirs\n{OTHER_END}\n\n{BEGIN}\n"
    after = f"{END}\n\n| a | b |\n|---|---|\n\nno newline at the end"
    page = tmp_path / "BENCHMARKS.md"
    page.write_bytes((before + "old\nrows\n\n" + after).encode())
    sections.write(page, OWNER, "\n\nnew table\n| 1 | 2 |\n")
    assert page.read_bytes() == (before + "new table\n| 1 | 2 |\n" + after).encode()
    sections.write(page, OWNER, "new table\n| 1 | 2 |")  # again: the same bytes
    assert page.read_bytes() == (before + "new table\n| 1 | 2 |\n" + after).encode()
    sections.write(page, "benchmarks/bench_pipeline.py", "mine")  # another generator: its section only
    assert page.read_bytes() == (before.replace("theirs", "mine") + "new table\n| 1 | 2 |\n" + after).encode()


@pytest.mark.parametrize(
    "text",
    [
        "# Benchmarks\n\nno section here\n",
        f"# Benchmarks\n{BEGIN}\nrows\n",  # no end
        f"# Benchmarks\nrows\n{END}\n",  # no beginning
        f"{END}\nrows\n{BEGIN}\n",  # the wrong way round
        f"{BEGIN}\nrows\n{END}\n{BEGIN}\nrows\n{END}\n",  # twice
        f"{OTHER_BEGIN}\nrows\n{OTHER_END}\n",  # only another generator's
    ],
)
def test_without_exactly_one_pair_of_its_markers_a_generator_stops_with_one_line_and_writes_nothing(tmp_path, text):
    page = tmp_path / "BENCHMARKS.md"
    page.write_text(text)
    for attempt in (lambda: sections.check(page, OWNER), lambda: sections.write(page, OWNER, "new")):
        with pytest.raises(SystemExit) as stopped:
            attempt()
        message = str(stopped.value.code)
        assert "\n" not in message and str(page) in message and BEGIN in message
        assert page.read_text() == text
    with pytest.raises(SystemExit) as stopped:
        sections.check(tmp_path / "missing.md", OWNER)
    assert "\n" not in str(stopped.value.code)


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda module: module.__name__)
def test_a_generator_checks_its_markers_before_it_measures_anything(generator, tmp_path, monkeypatch):
    def measure(*args, **kwargs):
        raise AssertionError("measured before checking the file")

    for name in ("matmul_gflops", "timed_stages"):
        if hasattr(generator, name):
            monkeypatch.setattr(generator, name, measure)
    if generator is bench_pipeline:
        monkeypatch.setattr(bench_pipeline.subprocess, "run", measure)  # its first step clones the repository
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n")
    monkeypatch.setattr(sys, "argv", [f"{generator.__name__}.py", "--into", str(page)])
    with pytest.raises(SystemExit, match="needs exactly one"):
        generator.main()
    assert page.read_text() == "# Benchmarks\n"


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda module: module.__name__)
def test_benchmarks_md_holds_each_generators_section(generator):
    assert generator.OWNER == f"benchmarks/{generator.__name__}.py"
    sections.check(ROOT / "BENCHMARKS.md", generator.OWNER)


def test_benchmarks_md_opens_with_the_headline_table_and_each_row_names_its_command():
    lines = (ROOT / "BENCHMARKS.md").read_text().splitlines()
    assert lines[0] == "# Benchmarks"
    assert lines.count("## Headline") == 1  # README.md and docs/ link to BENCHMARKS.md#headline
    first_table = next(i for i, line in enumerate(lines) if line.startswith("|"))
    headings = [line for line in lines[:first_table] if line.startswith("#")]
    assert headings == ["# Benchmarks", "## Headline"]
    table = []
    for line in lines[first_table:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    header, rule, *rows = table
    assert header == ["what is measured", "number", "machine", "command"] and set("".join(rule)) == {"-"}
    assert len(rows) >= 8
    for row in rows:
        assert len(row) == 4 and all(row), row
        assert re.search(r"`(python|make|dvc) [^`]+`", row[3]), row


def test_benchmarks_md_has_no_dates_and_no_bare_issue_numbers():
    text = (ROOT / "BENCHMARKS.md").read_text()
    assert re.findall(r"\b20\d\d-\d\d-\d\d\b", text) == []
    assert re.findall(r"\bissue \d+\b|#\d+\b", text, flags=re.IGNORECASE) == []
