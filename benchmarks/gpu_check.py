"""Everything a CUDA GPU changes, checked and measured in ONE run of about 5 minutes (at most ~9), for a machine
lent for a single 10-minute call.

Four parts, each under its own time limit (`PART_LIMITS_S`) so that one that hangs or fails is recorded and the
others still run:

1. tests: `pytest -m gpu tests/gpu` with CONTRASTLAB_DEVICE=cuda: passed, failed, skipped, the failures' names;
2. tiny: the default scenario end to end on the tiny mirror of tests/tinydata.py (`make_tiny_repo`), on the GPU:
   `dvc repro` where DVC is installed, else the stages' own commands from dvc.yaml, check to probe (not the
   baselines, nor `track`, which needs MLflow);
3. real: the default scenario's stages, check to probe (no t-SNE), on the real dataset where this checkout has it
   (`data/datasets/<dataset>`, else the download mirror: `$CONTRASTLAB_MIRROR` or `download.mirror`); the train
   stage's time is the figure;
4. throughput: the default scenario's training (params.yaml, `--epochs` epochs) on synthetic uint8 images of its
   dataset's shape, 6,000 per class, in fp32, fp32 with cuDNN autotuning (`train.deterministic: false`), bf16,
   fp16 and compiled bf16: images/s, the GPU's busy fraction (NVML's utilization, sampled while training runs)
   and peak memory. In a process of its own, which records each row as it finishes.

It writes one JSON (`--out`; rewritten after every part, so a killed run keeps what it measured) with the GPU,
driver, torch, CUDA and cuDNN versions and every number, the pytest log beside it, and prints a Markdown section
for BENCHMARKS.md. Without a CUDA GPU it says so in one line and exits with status 2, writing nothing.

    python benchmarks/gpu_check.py --out gpu_check.json
    python benchmarks/gpu_check.py --parts tests throughput      # a rerun of some parts

Needs torch with CUDA and the package's dependencies (pytorch-metric-learning for supcon's tests; DVC for
`dvc repro`, else the stage commands run); the package need not be installed: src/ is put on the path.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock
from xml.etree import ElementTree

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]  # the package, tinydata, bench_*
from bench_training import subset  # noqa: E402

import tinydata  # noqa: E402
from contrastlab.infra import params  # noqa: E402
from contrastlab.infra.files import now_stamp, one_line, read_metrics  # noqa: E402
from contrastlab.infra.machine import DEVICE_ENV, cpu_description, cuda_unusable_reason, device_record  # noqa: E402
from contrastlab.infra.stage import keep_freed_memory  # noqa: E402
from contrastlab.methods.losses import LOSSES  # noqa: E402
from contrastlab.pipeline.datasets import DATASETS  # noqa: E402
from contrastlab.pipeline.download import mirror_folder  # noqa: E402
from contrastlab.pipeline.examples import build  # noqa: E402
from contrastlab.pipeline.train import TrainConfig, train  # noqa: E402

PART_LIMITS_S = {"tests": 180, "tiny": 100, "real": 120, "throughput": 150}  # 550 s: inside a 600-s call
TEST_TIMEOUT_S = 60  # one test's limit, where pytest-timeout is installed
# The stages a run without DVC executes, in dvc.yaml's order: the scenario's path to its probe score.
TINY_STAGES = ("check", "download", "examples", "train", "embed", "tsne", "probe")
REAL_STAGES = ("check", "download", "examples", "train", "embed", "probe")  # t-SNE's 5,000 iterations are CPU work
SCENARIO_READS = ("dataset", "loss", "aug", "seed", "model", "pairs", "train")
# What some part uses beyond torch: without pytorch_metric_learning supcon's tests fail, without dvc the stage commands
# stand in for `dvc repro`, without pynvml (nvidia-ml-py) the GPU's busy fraction is not measured.
OPTIONAL_MODULES = ("pytorch_metric_learning", "dvc", "pynvml")
IMAGES_PER_CLASS = 6_000  # MNIST's training set; the protocol's 5,000 anchors per class fit
# Throughput rows: what each changes in the default scenario's training. Compiling (slowest, may fail) comes last.
VARIANTS = {
    "fp32": {},
    "fp32, cuDNN autotuned": {"deterministic": False},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "bf16 compiled": {"precision": "bf16", "compile": True},
}


@dataclasses.dataclass
class Finished:
    returncode: int | None  # None: stopped at its time limit
    seconds: float
    output: str


def run_limited(command: list[str], cwd: Path, env: dict, limit_s: float) -> Finished:
    """Run `command` (stdout and stderr together); at `limit_s` kill it with everything it started (its process
    group, which stays in this session: a lent machine ends the session's processes when the call returns)."""
    start = time.perf_counter()
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0
    ) as process:
        try:
            output, _ = process.communicate(timeout=max(limit_s, 1))
            returncode: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            returncode = None
    return Finished(returncode, time.perf_counter() - start, output)


def status_of(finished: Finished) -> str:
    return "timed out" if finished.returncode is None else "ok" if finished.returncode == 0 else "failed"


def with_source_path(env: dict) -> dict:
    """`env` whose Python finds this checkout's package first."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))}


def working_tree_params() -> dict:
    """The params as they are in this checkout, uncommitted changes included: what is being checked (a copy of a
    working tree has no commits, and the committed params may lack keys the working tree's code needs)."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def missing_modules() -> list[str]:
    """What this Python lacks of what some part uses: each shows as that part's failures or skips."""
    return [name for name in OPTIONAL_MODULES if importlib.util.find_spec(name) is None]


def machine() -> dict:
    """The GPU, its driver and the software: what every number of the run depends on."""
    record = device_record(torch.device("cuda", 0))
    if record["gpu_driver"] == "unknown" and shutil.which("nvidia-smi"):  # no /proc/driver/nvidia in some VMs
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        found = subprocess.run(query, capture_output=True, text=True)
        record["gpu_driver"] = found.stdout.strip().splitlines()[0] if found.returncode == 0 else "unknown"
    properties = torch.cuda.get_device_properties(0)
    return {
        **record,
        "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
        "compute_capability": f"{properties.major}.{properties.minor}",
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
        "cpu": cpu_description(),
        "measured": now_stamp(),
        "missing_modules": missing_modules(),
    }


# --- 1. the CUDA tests --------------------------------------------------------------------------------------------


def junit_summary(path: Path) -> dict:
    """Counts and the failures' names and first lines from pytest's JUnit XML."""
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None, f"{path} holds no test suite"
    total, failed, errors, skipped = (int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped"))
    failures = [
        f"{case.get('name')}: {one_line(outcome.get('message', ''), 200)}"
        for case in suite.iter("testcase")
        for outcome in case
        if outcome.tag in ("failure", "error")
    ]
    return {
        "passed": total - failed - errors - skipped,
        "failed": failed,
        "errors": errors,
        "skipped": skipped,
        "failures": failures[:60],
    }


def progress_summary(output: str) -> dict:
    """Counts and failures' names from pytest's verbose lines, for a run stopped before its JUnit XML was written."""
    outcomes = re.findall(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", output, flags=re.MULTILINE)
    counted = {
        word: sum(outcome == word for _, outcome in outcomes) for word in ("PASSED", "FAILED", "ERROR", "SKIPPED")
    }
    return {
        "passed": counted["PASSED"],
        "failed": counted["FAILED"],
        "errors": counted["ERROR"],
        "skipped": counted["SKIPPED"],
        "failures": [test for test, outcome in outcomes if outcome in ("FAILED", "ERROR")][:60],
    }


def run_tests(limit_s: float, log: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-v", "--tb=short"]
        command += ["-p", "no:cacheprovider", f"--junitxml={junit}"]
        if importlib.util.find_spec("pytest_timeout"):  # a hung kernel costs one test, not the part
            command.append(f"--timeout={TEST_TIMEOUT_S}")
        env = with_source_path({**os.environ, DEVICE_ENV: "cuda"})
        finished = run_limited(command, ROOT, env, limit_s)
        log.write_text(finished.output)
        counts = junit_summary(junit) if junit.is_file() else progress_summary(finished.output)
    status = status_of(finished)
    if status == "failed" and not any(counts[key] for key in ("passed", "failed", "errors", "skipped")):
        status = "error"  # pytest itself failed: see the log
    return {"status": status, "seconds": round(finished.seconds, 1), **counts, "log": log.name}


# --- 2. and 3. the pipeline's stages ------------------------------------------------------------------------------


def stage_commands(dvc_yaml: Path, names: tuple[str, ...], values: dict) -> list[tuple[str, list[str]]]:
    """The stages' commands as DVC would run them: dvc.yaml's `cmd` with `${key}` filled from the params, by this
    Python."""

    def value(match: re.Match) -> str:
        node = values
        for key in match[1].split("."):
            node = node[key]
        return str(node)

    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    commands = []
    for name in names:
        argv = shlex.split(re.sub(r"\$\{([\w.]+)\}", value, stages[name]["cmd"]))
        commands.append((name, [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]))
    return commands


def run_stages(folder: Path, commands: list[tuple[str, list[str]]], env: dict, limit_s: float) -> dict:
    """Run the stage commands one after another in `folder` until one fails or the time is up."""
    deadline, seconds = time.monotonic() + limit_s, {}
    for name, command in commands:
        finished = run_limited(command, folder, env, deadline - time.monotonic())
        seconds[name] = round(finished.seconds, 1)
        if finished.returncode != 0:
            return {
                "status": status_of(finished),
                "stage_s": seconds,
                "stopped_at": name,
                "tail": finished.output[-2000:],
            }
    return {"status": "ok", "stage_s": seconds}


def scenario_results(folder: Path) -> dict:
    """What the train and probe stages recorded: the device, the training's time and rate, the probe's scores."""
    found = {}
    if (folder / "metrics" / "train.json").is_file():
        record = read_metrics(folder / "metrics" / "train.json")
        keys = ("device", "gpu", "precision", "deterministic", "epochs", "train_time_s", "images_per_s", "final_loss")
        found["train"] = {key: record[key] for key in keys if key in record}
    if (folder / "metrics" / "probe.json").is_file():
        record = read_metrics(folder / "metrics" / "probe.json")
        found["probe"] = {key: record[key] for key in ("top1", "knn") if key in record}
    return found


def run_tiny(limit_s: float, device: str = "cuda") -> dict:
    """The tiny scenario end to end on `device`: `dvc repro` if DVC is installed, else the stage commands."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(tinydata, "committed_params", working_tree_params):
        repo, env = tinydata.make_tiny_repo(Path(tmp))
        env[DEVICE_ENV] = device
        dvc = shutil.which("dvc", path=env["PATH"])
        if dvc:
            finished = run_limited([dvc, "repro"], repo, env, limit_s - (time.perf_counter() - start))
            outcome = {"status": status_of(finished), "runner": "dvc repro"}
            outcome["stages_run"] = re.findall(r"Running stage '([\w@-]+)'", finished.output)
            if finished.returncode != 0:
                outcome["tail"] = finished.output[-2000:]
        else:
            tiny_params = yaml.safe_load((repo / "params.yaml").read_text())
            commands = stage_commands(repo / "dvc.yaml", TINY_STAGES, tiny_params)
            outcome = {"runner": "the stages' commands (DVC is not installed)"}
            outcome |= run_stages(repo, commands, env, limit_s - (time.perf_counter() - start))
        return {**outcome, "seconds": round(time.perf_counter() - start, 1), **scenario_results(repo)}


def run_real(limit_s: float, device: str = "cuda") -> dict:
    """The default scenario's stages on the real dataset, in a scratch folder that links this checkout's stages and
    data: from `data/datasets/<dataset>` as the download stage left it, else downloaded from the mirror."""
    values = working_tree_params()
    dataset = values["dataset"]
    prepared = ROOT / "data" / "datasets" / dataset
    mirror = mirror_folder(values["download"]["mirror"], ROOT)  # $CONTRASTLAB_MIRROR first, as the download stage
    names = REAL_STAGES
    if (prepared / "meta.json").is_file():
        names = tuple(name for name in REAL_STAGES if name != "download")
    elif mirror is None or not (mirror / DATASETS[dataset].mirror_folder).is_dir():
        return {
            "status": "skipped",
            "reason": f"no {dataset}: neither {prepared.relative_to(ROOT)} (carry it) nor a mirror ({mirror})",
        }
    else:
        values["download"].update(mirror=str(mirror.resolve()), sources=["mirror"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "stages").symlink_to(ROOT / "stages")
        (folder / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        if "download" not in names:
            (folder / "data" / "datasets").mkdir(parents=True)
            (folder / "data" / "datasets" / dataset).symlink_to(prepared)
        commands = stage_commands(ROOT / "dvc.yaml", names, values)
        env = with_source_path({**os.environ, DEVICE_ENV: device})
        outcome = run_stages(folder, commands, env, limit_s)
        return {
            **outcome,
            "data": "data/datasets" if "download" not in names else "downloaded from the mirror",
            **scenario_results(folder),
        }


# --- 4. training throughput ---------------------------------------------------------------------------------------


class BusySampler:
    """The share of time the GPU ran a kernel while a block runs: NVML's utilization (over its last sample period,
    1/6 s to 1 s) read every `every_s` seconds; `error` says why not where NVML (pynvml) is missing."""

    def __init__(self, every_s: float = 0.1):
        self.every_s, self.samples, self.error = every_s, [], None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.done.wait(self.every_s):
            try:
                self.samples.append(torch.cuda.utilization(0))
            except Exception as err:  # noqa: BLE001 - pynvml missing, or NVML refused: the figure is left out
                self.error = one_line(err, 200)
                return

    def __enter__(self) -> BusySampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    @property
    def busy(self) -> float | None:
        return round(sum(self.samples) / len(self.samples) / 100, 3) if self.samples else None


def compiled_graphs() -> int:
    """How many graphs torch.compile has compiled in this process so far."""
    from torch._dynamo.utils import counters  # here: importing torch's compiler costs every other part a second

    return counters["stats"]["unique_graphs"]


def synthetic_scenario() -> tuple[TrainConfig, torch.Tensor, dict, str]:
    """params.yaml's scenario on random uint8 images of its dataset's shape: the config, images, examples, a name."""
    p = params.load(SCENARIO_READS, ROOT / "params.yaml")
    config = TrainConfig.from_params(p)
    spec, pairs = DATASETS[p["dataset"]], p["pairs"]
    rng = np.random.default_rng(0)
    per_class = max(IMAGES_PER_CLASS, pairs["anchors_per_class"])
    labels = rng.permutation(np.repeat(np.arange(len(spec.classes)), per_class))
    images = rng.integers(0, 256, (len(labels), spec.channels, spec.size, spec.size), dtype=np.uint8)
    examples = build(
        labels,
        LOSSES[config.loss].examples,
        pairs["anchors_per_class"],
        config.seed,
        negatives=pairs["negatives"],
        augment_anchor=pairs["augment_anchor"],
    )
    name = f"{p['dataset']} / {config.loss} / {config.aug}, {config.arch} encoder, batch {config.batch_size}"
    return config, torch.from_numpy(images), examples, name


def measure_throughput(out: Path, epochs: int) -> None:
    """Time every VARIANTS row of the default scenario's training, writing `out` after each row."""
    keep_freed_memory()  # as the train stage's process keeps it (`contrastlab.infra.stage.run_stage`)
    config, images, examples, name = synthetic_scenario()
    n = len(examples["target"])
    record = {"scenario": name, "images": len(images), "examples": n, "epochs": epochs, "rows": []}
    device = torch.device("cuda", 0)
    # the warm-up's batches have both of the timed run's batch sizes: compiling happens there, once per size
    warm_up = subset(examples, config.batch_size + n % config.batch_size)
    for label, change in VARIANTS.items():
        variant = dataclasses.replace(config, epochs=epochs, **change)
        row: dict = {"variant": label, "precision": variant.precision, "deterministic": variant.deterministic}
        try:
            start = time.perf_counter()
            train(images, warm_up, dataclasses.replace(variant, epochs=1), device=device, progress=False)
            row["warm_up_s"] = round(time.perf_counter() - start, 1)
            torch.cuda.reset_peak_memory_stats(device)
            graphs = compiled_graphs()
            with BusySampler() as sampler:
                result = train(images, examples, variant, device=device, progress=False)
            row |= {
                "images_per_s": round(result.images_per_s),
                "epoch_s": round(result.train_time_s / epochs, 2),
                "gpu_busy": sampler.busy,
                "peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20),
                "compiled": result.compiled,
                "graphs_compiled_while_timed": compiled_graphs() - graphs,  # 0: the warm-up compiled everything
                "final_loss": result.epoch_losses[-1],
            }
            if sampler.error:
                row["gpu_busy_error"] = sampler.error
        except Exception as err:  # noqa: BLE001 - e.g. torch.compile without Triton: recorded, the next row runs
            row["error"] = one_line(f"{type(err).__name__}: {err}", 300)
        record["rows"].append(row)
        out.write_text(json.dumps(record, indent=1))


def run_throughput(limit_s: float, epochs: int) -> dict:
    """measure_throughput in a process of its own, so that its time limit holds (a compile can take minutes)."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "throughput.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--throughput-into", str(rows)]
        finished = run_limited([*command, "--epochs", str(epochs)], ROOT, with_source_path(dict(os.environ)), limit_s)
        measured = json.loads(rows.read_text()) if rows.is_file() else {}
    outcome = {"status": status_of(finished), "seconds": round(finished.seconds, 1), **measured}
    if finished.returncode != 0:
        outcome["tail"] = finished.output[-2000:]
    return outcome


# --- the report ---------------------------------------------------------------------------------------------------


def tests_line(part: dict) -> str:
    if "passed" not in part:
        return f"{part['status']}: {part.get('error') or 'see ' + part.get('log', 'the log')}"
    counts = ", ".join(f"{part[key]} {key}" for key in ("passed", "failed", "errors", "skipped") if part[key])
    return f"{counts} in {part['seconds']:.0f} s"


def scenario_line(part: dict) -> str:
    if part["status"] in ("skipped", "error") and "stage_s" not in part:
        return f"{part['status']}: {part.get('reason') or part.get('error')}"
    words = [part["status"] if "stopped_at" not in part else f"{part['status']} at {part['stopped_at']}"]
    trained, probed = part.get("train", {}), part.get("probe", {})
    if trained:
        words.append(
            f"training {trained['train_time_s']:.1f} s at {trained['images_per_s']:,.0f} images/s on "
            f"{trained.get('gpu', trained['device'])}"
        )
    if probed:
        words.append(f"probe top-1 {probed['top1']:.4f}")
    if "stage_s" in part:
        words.append("stages " + ", ".join(f"{name} {s:.0f} s" for name, s in part["stage_s"].items()))
    return "; ".join(words)


def markdown(record: dict) -> str:
    m, parts = record["machine"], record["parts"]
    lines = [
        f"Measured by `python benchmarks/gpu_check.py` on {m['gpu']} ({m['gpu_memory_gib']} GiB, driver "
        f"{m['gpu_driver']}), torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}, {m['measured']}.",
        "",
        "| part | result |",
        "|---|---|",
    ]
    if "tests" in parts:
        lines.append(f"| CUDA tests (`pytest -m gpu tests/gpu`) | {tests_line(parts['tests'])} |")
    for key, what in (("tiny", "tiny scenario end to end"), ("real", "default scenario, real data, check to probe")):
        if key in parts:
            lines.append(f"| {what} | {scenario_line(parts[key])} |")
    if "throughput" in parts:
        t = parts["throughput"]
        said = t.get("error") or one_line(t.get("tail", ""), 300)
        done = f"{len(t.get('rows', []))} of {len(VARIANTS)} variants" + (" (below)" if t.get("rows") else "")
        lines.append(f"| training throughput | {t['status']}: {done}{'; ' + said if said else ''} |")
    rows = parts.get("throughput", {}).get("rows", [])
    if rows:
        t = parts["throughput"]
        lines += [
            "",
            f"Training throughput: {t['scenario']}, {t['examples']:,} examples of synthetic images, "
            f"{t['epochs']} epochs (GPU busy: NVML's utilization while training ran):",
            "",
            "| variant | images/s | vs fp32 | s per epoch | GPU busy | peak memory (MiB) |",
            "|---|---|---|---|---|---|",
        ]
        base = next((row["images_per_s"] for row in rows if row["variant"] == "fp32" and "images_per_s" in row), None)
        for row in rows:
            if "error" in row:
                lines.append(f"| {row['variant']} | failed: {row['error']} | | | | |")
                continue
            ratio = f"{row['images_per_s'] / base:.2f}x" if base else ""
            busy = f"{row['gpu_busy']:.0%}" if row["gpu_busy"] is not None else "n/a"
            lines.append(
                f"| {row['variant']} | {row['images_per_s']:,} | {ratio} | {row['epoch_s']} | {busy} | "
                f"{row['peak_memory_mib']:,} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON of every number")
    parser.add_argument("--parts", nargs="+", choices=list(PART_LIMITS_S), default=list(PART_LIMITS_S))
    parser.add_argument("--epochs", type=int, default=2, help="throughput: epochs per timed training")
    parser.add_argument("--throughput-into", type=Path, help=argparse.SUPPRESS)  # the throughput part's own process
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU here ({cuda_unusable_reason()}); run it on a machine with one", file=sys.stderr)
        sys.exit(2)
    if args.throughput_into:
        measure_throughput(args.throughput_into, args.epochs)
        return

    record: dict = {"machine": machine(), "limits_s": PART_LIMITS_S, "parts": {}}
    print(f"gpu_check on {record['machine']['gpu']}: {', '.join(args.parts)}", flush=True)
    if record["machine"]["missing_modules"]:
        print(f"missing here: {', '.join(record['machine']['missing_modules'])} (OPTIONAL_MODULES)", flush=True)
    log = args.out.with_name(f"{args.out.stem}.pytest.log")
    runs = {
        "tests": lambda limit: run_tests(limit, log),
        "tiny": run_tiny,
        "real": run_real,
        "throughput": lambda limit: run_throughput(limit, args.epochs),
    }
    for part in args.parts:
        start = time.perf_counter()
        try:
            record["parts"][part] = runs[part](PART_LIMITS_S[part])
        except Exception as err:  # noqa: BLE001 - a part that breaks is recorded; the others still run
            record["parts"][part] = {"status": "error", "error": one_line(f"{type(err).__name__}: {err}", 500)}
        print(f"{part}: {record['parts'][part]['status']} ({time.perf_counter() - start:.0f} s)", flush=True)
        args.out.write_text(json.dumps(record, indent=1))
    print()
    print(markdown(record))


if __name__ == "__main__":
    main()
