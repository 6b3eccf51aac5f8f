"""openTSNE or scikit-learn for the project's t-SNE maps? Speed and quality in ONE run.

Why: the `evaluate` stage draws its t-SNE map with scikit-learn's Barnes-Hut TSNE
(`contrastlab.pipeline.tsne.tsne_map`: perplexity 20, PCA init, max_iter 5000, random_state 0) on
the first 1,000 test embeddings. This script checks whether openTSNE would do the same job
faster and as well, on 1,000 and on 10,000 points, before anyone changes that stage.

How: for each n it embeds the FIRST n rows of `embeddings` (as the project does) with
- `sklearn`            the project's call, unchanged;
- `openTSNE-bh`        openTSNE set up to match sklearn as closely as it can: exact kNN
                       (k = 3 * perplexity), PCA init rescaled to std 1e-4, early exaggeration
                       12 for 250 iterations with momentum 0.5, then 4,750 iterations with
                       momentum 0.8 (250 + 4,750 = sklearn's 5,000), and sklearn's effective
                       learning rate (sklearn's 'auto' is N/12/4 with a gradient 4x larger than
                       openTSNE's, i.e. N/12 in openTSNE units), Barnes-Hut with theta 0.5;
- `openTSNE-fft`       the same with the FFT-interpolation gradient (openTSNE's choice for
                       n >= 10,000);
- `openTSNE-defaults`  openTSNE's own defaults for everything but perplexity, PCA init, seed,
                       threads and length: approximate kNN with Annoy, momentum 0.8 throughout,
                       learning rate N/12 during exaggeration and N afterwards, Barnes-Hut below
                       10,000 points and FFT from 10,000; still 250 + 4,750 iterations;
- `openTSNE-defaults-750`  as above but openTSNE's default length, 250 + 500 iterations (NOT
                       equivalent: with its larger learning rate openTSNE needs far fewer
                       iterations; this shows what the shorter run costs in quality).
All openTSNE runs use random_state 0 and n_jobs = the number of usable cores.

Each fit runs in a fresh spawned process (so peak memory and CPU time are its own); repeats
are interleaved (repeat 1 of every method, then repeat 2, ...) so load on a shared machine hits
all methods alike; the table shows the median wall time of the fit. Quality is measured in this
process on the returned map: `sklearn.manifold.trustworthiness(X, Y, n_neighbors=10)` and the
5-fold stratified cross-validated accuracy of a 10-nearest-neighbour classifier on the 2-d map.
"Deterministic" compares the coordinates of the repeats (all from random_state 0) bit for bit.
If a method's first fit at a size shows that all its repeats would exceed `--budget` seconds,
that case is run once (sklearn on 10k points with 5,000 iterations; openTSNE's FFT gradient,
whose cost per iteration grows with the map's extent, which 5,000 iterations make large); a fit
still running after `--timeout` seconds is stopped and reported as such.

    python benchmarks/bench_tsne.py --data /path/embeddings.npz --out benchmarks/tsne_results.md
    python benchmarks/bench_tsne.py --sizes 1000 --max-iter 1000 --repeats 2   # a quick look

Input: a `.npz` with `embedding` (N x d float32) and `labels` (N,), e.g. the `embed` stage's.
Needs openTSNE (`pip install openTSNE`) in addition to the project's dependencies.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PERPLEXITY = 20.0
EXAGGERATION = 12.0
EXAGGERATION_ITER = 250  # sklearn's TSNE._EXPLORATION_MAX_ITER
SEED = 0
METHODS = ("sklearn", "openTSNE-bh", "openTSNE-fft", "openTSNE-defaults", "openTSNE-defaults-750")


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _fit(method: str, x: np.ndarray, max_iter: int, n_jobs: int) -> tuple[np.ndarray, dict]:
    """Fit one map in the current process; return coordinates and measurements."""
    import resource

    import openTSNE
    from sklearn.manifold import TSNE

    n = len(x)
    info: dict = {}
    if method == "sklearn":
        # contrastlab.pipeline.tsne.tsne_map's TSNE call (it also centres and rescales the features first)
        model = TSNE(n_components=2, perplexity=PERPLEXITY, max_iter=max_iter, init="pca", random_state=SEED)
        fit = model.fit_transform
    else:
        common = dict(
            n_components=2,
            perplexity=PERPLEXITY,
            initialization="pca",
            early_exaggeration=EXAGGERATION,
            early_exaggeration_iter=EXAGGERATION_ITER,
            n_iter=max_iter - EXAGGERATION_ITER,
            random_state=SEED,
            n_jobs=n_jobs,
        )
        if method in ("openTSNE-bh", "openTSNE-fft"):
            common.update(
                neighbors="exact",
                learning_rate=n / EXAGGERATION,  # sklearn's effective step, both phases
                initial_momentum=0.5,
                final_momentum=0.8,
                negative_gradient_method="bh" if method == "openTSNE-bh" else "fft",
            )
        elif method == "openTSNE-defaults":
            pass  # openTSNE's own choices: Annoy kNN, learning rate N/12 then N, momentum 0.8, bh/fft by n
        elif method == "openTSNE-defaults-750":
            common.update(n_iter=500)
        else:
            raise ValueError(method)
        info["call"] = common
        model = openTSNE.TSNE(**common)
        fit = model.fit

    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = fit(x)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    info.update(
        seconds=seconds,
        cpu_per_wall=cpu / seconds,
        peak_rss_mb=after.ru_maxrss / 1024,  # Linux reports KiB
        # sklearn may stop early (no progress for 300 iterations); openTSNE always runs all
        n_iter=int(model.n_iter_) + 1 if method == "sklearn" else EXAGGERATION_ITER + model.n_iter,
    )
    # KL divergence as each library reports it at the end (each with its own approximation)
    info["kl"] = float(model.kl_divergence_ if method == "sklearn" else result.kl_divergence)
    y = np.array(result, dtype=np.float64)
    info["extent"] = float(np.ptp(y, axis=0).max())  # FFT cost per iteration grows with it
    return y, info


def _child(conn, method: str, x: np.ndarray, max_iter: int, n_jobs: int) -> None:
    conn.send(_fit(method, x, max_iter, n_jobs))
    conn.close()


def fit_in_fresh_process(
    method: str, x: np.ndarray, max_iter: int, n_jobs: int, timeout: float
) -> tuple[np.ndarray, dict] | None:
    """`_fit` in a new interpreter; None if it has not finished after `timeout` seconds (it is stopped)."""
    ctx = mp.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(sender, method, x, max_iter, n_jobs))
    process.start()
    sender.close()
    try:
        if receiver.poll(timeout):
            result = receiver.recv()  # EOFError if the child died
            process.join()
            return result
        return None
    finally:
        if process.is_alive():
            process.terminate()
            process.join()
        receiver.close()


def knn_accuracy(y: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    return float(cross_val_score(KNeighborsClassifier(n_neighbors=10), y, labels, cv=folds).mean())


@dataclass
class Case:
    method: str
    n: int
    seconds: list[float] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    infos: list[dict] = field(default_factory=list)
    trust: float | None = None
    knn: float | None = None
    timed_out: bool = False

    def deterministic(self) -> str:
        if len(self.maps) < 2:
            return "not checked (1 run)"
        if all(np.array_equal(self.maps[0], m) for m in self.maps[1:]):
            return "yes"
        worst = max(float(np.abs(self.maps[0] - m).max()) for m in self.maps[1:])
        spread = float(np.ptp(self.maps[0]))
        return f"no (max diff {worst:.3g} of range {spread:.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/embeddings.npz"), help="npz with embeddings, labels")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="first n points to embed")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per method and size (median shown)")
    parser.add_argument("--max-iter", type=int, default=5000, help="total iterations incl. 250 of exaggeration")
    parser.add_argument(
        "--budget", type=float, default=600.0, help="seconds allowed for all repeats of one method and size"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="stop a single fit after this many seconds")
    parser.add_argument("--n-jobs", type=int, default=n_cores(), help="openTSNE threads (default: usable cores)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args()

    import openTSNE
    import sklearn
    from sklearn.manifold import trustworthiness

    data = np.load(args.data)
    embeddings, labels = data["embedding"].astype(np.float32), data["labels"]
    sizes = [n for n in args.sizes if n <= len(embeddings)]
    cases = {(m, n): Case(m, n) for n in sizes for m in args.methods}

    t0 = time.perf_counter()
    for rep in range(args.repeats):
        for n in sizes:
            x = embeddings[:n]
            for method in args.methods:
                case = cases[(method, n)]
                if case.timed_out or (case.seconds and case.seconds[0] * args.repeats > args.budget):
                    continue  # too slow to repeat: keep the single fit
                load = os.getloadavg()[0]
                fitted = fit_in_fresh_process(method, x, args.max_iter, args.n_jobs, args.timeout)
                if fitted is None:
                    case.timed_out = True
                    print(
                        f"[{time.perf_counter() - t0:7.0f}s] repeat {rep + 1} n={n:>6} {method:<22} "
                        f"stopped after {args.timeout:.0f}s  load before {load:.1f}",
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
                y, info = fitted
                case.seconds.append(info["seconds"])
                case.maps.append(y)
                case.infos.append(info | {"load": load})
                print(
                    f"[{time.perf_counter() - t0:7.0f}s] repeat {rep + 1} n={n:>6} {method:<22} "
                    f"{info['seconds']:8.1f}s  load before {load:.1f}  cpu/wall {info['cpu_per_wall']:.2f}  "
                    f"peak {info['peak_rss_mb']:.0f} MB  iters {info['n_iter']}  extent {info['extent']:.0f}  "
                    f"KL {info['kl']:.3f}",
                    file=sys.stderr,
                    flush=True,
                )

    for case in cases.values():
        if not case.maps:
            continue
        x = embeddings[: case.n]
        case.trust = float(trustworthiness(x, case.maps[0], n_neighbors=10))
        case.knn = knn_accuracy(case.maps[0], labels[: case.n])

    lines = [
        "# t-SNE: scikit-learn vs openTSNE",
        "",
        f"Data: `{args.data}` (first n of {len(embeddings)} x {embeddings.shape[1]}); perplexity {PERPLEXITY:g}, "
        f"PCA init, {args.max_iter} iterations ({EXAGGERATION_ITER} with exaggeration {EXAGGERATION:g}) unless named "
        f"otherwise, random_state {SEED}.",
        f"scikit-learn {sklearn.__version__}, openTSNE {openTSNE.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}, {n_cores()} cores ({platform.processor() or platform.machine()}), "
        f"openTSNE n_jobs={args.n_jobs}. Seconds: wall time of the fit, median of the repeats (interleaved, "
        "each in a fresh process). Quality from the first repeat's map: trustworthiness (k=10) and 5-fold "
        "kNN (k=10) accuracy on the 2-d map. Deterministic: the repeats' coordinates are identical. "
        "KL: final KL divergence as each library reports it (each with its own approximation). CPU/wall: CPU "
        "seconds per wall second of the fit (median; 2 = both cores busy). Peak RSS: largest resident size "
        "of the fitting process, including ~200 MB of Python, numpy, sklearn and openTSNE. Map extent: the "
        "larger side of the map's bounding box (openTSNE's FFT grid, hence its cost, grows with it).",
        "",
        "| method | n | seconds (median) | repeats | speed-up vs sklearn | trustworthiness | kNN acc. | deterministic "
        "| KL (reported) | CPU/wall | peak RSS MB | iterations run | map extent |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        base = cases.get(("sklearn", n))
        base_median = statistics.median(base.seconds) if base and base.seconds else None
        for method in args.methods:
            case = cases[(method, n)]
            if not case.seconds:
                lines.append(
                    f"| {method} | {n} | > {args.timeout:.0f} (stopped) | 0 | < {base_median / args.timeout:.2f}x "
                    f"| - | - | - | - | - | - | - | - |"
                    if base_median
                    else f"| {method} | {n} | > {args.timeout:.0f} (stopped) | 0 | - | - | - | - | - | - | - | - | - |"
                )
                continue
            median = statistics.median(case.seconds)
            ratio = f"{base_median / median:.2f}x" if base_median and method != "sklearn" else "-"
            cpu = statistics.median(i["cpu_per_wall"] for i in case.infos)
            rss = max(i["peak_rss_mb"] for i in case.infos)
            iters = sorted({i["n_iter"] for i in case.infos})
            lines.append(
                f"| {method} | {n} | {median:.1f} | {len(case.seconds)} | {ratio} | {case.trust:.4f} | "
                f"{case.knn:.4f} | {case.deterministic()} | {case.infos[0]['kl']:.3f} | {cpu:.2f} | {rss:.0f} | "
                f"{'/'.join(map(str, iters))} | {case.infos[0]['extent']:.0f} |"
            )
        ref = knn_accuracy(embeddings[:n], labels[:n])
        lines.append(f"| (32-d embeddings, no t-SNE) | {n} | - | - | - | 1 | {ref:.4f} | - | - | - | - | - | - |")
    lines += ["", "All times (s), in run order, with the machine's 1-minute load average before each fit:", ""]
    for case in cases.values():
        runs = [f"{i['seconds']:.1f} (load {i['load']:.1f})" for i in case.infos]
        if case.timed_out:
            runs.append(f"stopped after {args.timeout:.0f}")
        lines.append(f"- {case.method}, n={case.n}: " + ", ".join(runs))
    calls = {c.method: c.infos[0].get("call") for c in cases.values() if c.infos and c.infos[0].get("call")}
    if calls:
        lines += ["", "openTSNE calls (`openTSNE.TSNE(**kwargs).fit(X)`; learning_rate shown for the largest n):", ""]
        for method, call in calls.items():
            lines.append(f"- {method}: `{call}`")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
