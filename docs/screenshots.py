"""The README's MLflow screenshots, taken in headless Chromium from the committed study imported into a store:

- docs/mlflow_runs.png     the runs table of the protocol study (seed 0), with `probe_top1`, best first;
- docs/mlflow_compare.png  MLflow's Compare view of the same 12 scenarios;
- docs/mlflow_models.png   with `--encoders REPO`: the experiment's Models view, listing the trained encoders that the
                           track stage logged, each with its probe metrics (linked to the model and the test images).

    python docs/screenshots.py                                    # imports study/results into a temporary store first
    python docs/screenshots.py --store sqlite:////tmp/x/mlflow.db  # a store that already holds the import
    python docs/screenshots.py --encoders ../studyrun             # also log the encoders of REPO's DVC experiments

The committed results folders keep no weights, so the Models view needs a repository whose DVC experiments and cache
hold the encoders: each experiment that trained one is logged by the track stage itself (`stages/track.py`, run on
the experiment's own files from git and DVC's cache), without its baselines, which a `--no-baselines` study skips.

A script, not a test: the full import takes minutes and a person looks at the pictures before committing them.
tests/test_mlflow_ui.py runs the same server, browser and view on a few imported runs.

The browser is Debian's `chromium`, driven through the DevTools protocol (websocket-client) rather than its
`--screenshot` switch: that is how the page can be waited for (the runs are on screen, not a fixed delay) and how
MLflow's assistant panel stays closed (it opens itself on a first visit to a local server and would take a quarter
of the picture). The table's filter, order and columns are an MLflow shared view (the experiment tag the runs
page's Share button saves), so the screenshot is the page that `runs_url(...)&viewStateShareKey=<key>` opens.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import websocket
import yaml

from contrastlab.infra.tracking import EXPERIMENT, runs_url

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_STUDY = "study: protocol recipe"
# What the UI stores once it has opened its assistant panel by itself: it then starts closed.
ASSISTANT_ALREADY_SHOWN = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}
# The rows the runs table shows, as {column id: text} ("attributes.`Run Name`", "metrics.`probe_top1`", ...):
# AG Grid draws the pinned name column and the other columns in separate containers, joined by the row id.
RUNS_TABLE = """(() => {
  const rows = {};
  for (const cell of document.querySelectorAll('.ag-row[row-id] [col-id]')) {
    const id = cell.closest('.ag-row').getAttribute('row-id');
    (rows[id] ??= {})[cell.getAttribute('col-id')] = cell.innerText.trim();
  }
  return Object.values(rows);
})()"""
RUN_NAME, PROBE_TOP1 = "attributes.`Run Name`", "metrics.`probe_top1`"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> str | None:
    return shutil.which("chromium")


def wait_until(ready: Callable[[], object], timeout: float, failure: Callable[[], str]) -> object:
    """`ready()` once it is truthy, polled until `timeout` seconds; then AssertionError(failure())."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(failure())
        time.sleep(0.25)


@contextlib.contextmanager
def mlflow_ui(store: str, log: Path, timeout: float = 120) -> Iterator[str]:
    """`mlflow ui` on 127.0.0.1 (as the README starts it) in its own process group, which is stopped as a whole
    (the server spawns workers); yields its URL once it answers."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "ui",
                "--backend-store-uri",
                store,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert server.poll() is None, f"mlflow ui exited ({server.returncode}):\n{log.read_text()[-3000:]}"
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
        return False

    try:
        wait_until(answers, timeout, lambda: f"mlflow ui did not answer within {timeout} s:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def temporary_store(folder: Path) -> str:
    """A new sqlite store in `folder` holding the project's experiment with its artifacts in `folder` too
    (`open_store` would put them in the repository's mlruns/, and set this process's tracking URI)."""
    import mlflow

    from contrastlab.infra.tracking import project_experiment

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    project_experiment(mlflow.MlflowClient(tracking_uri=uri), folder, uri)
    return uri


def import_results(results: Path, store: str, timeout: float) -> str:
    """`make mlflow`'s import of `results` into `store`, as a user runs it; returns what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "contrastlab.study.import_runs", "--results", str(results)],
        cwd=ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": store},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"the import failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def runs_view(experiment_id: str, **state) -> dict[str, str]:
    """The runs page's own record of how it was last shown (filter, order, columns, expanded parent runs), which
    it keeps in the browser's localStorage: a view for `Chromium(local_storage=...)` that changes nothing in the
    store."""
    key = f"MLflowLocalStorage-1.1-ExperimentPage-{json.dumps([experiment_id])}-ReactComponentState"
    return {key: json.dumps(state)}


def compare_url(server: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's Compare view of `run_ids` (its route `/compare-runs?runs=[...]&experiments=[...]`)."""
    query = urllib.parse.urlencode(
        {"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id]), "workflowType": "machine_learning"}
    )
    return f"{server}/#/compare-runs?{query}"


class Chromium:
    """Headless Chromium (a fresh profile, in its own process group) driven through the DevTools protocol."""

    def __init__(
        self, local_storage: dict[str, str] | None = None, width: int = 1600, height: int = 1000, timeout: float = 60
    ):
        self.width, self.height, self.timeout = width, height, timeout
        binary = chromium()
        assert binary, "Chromium not found (apt-get install chromium)"
        self.profile = Path(tempfile.mkdtemp(prefix="contrastlab-chromium-"))
        sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
        self.log = (self.profile / "chromium.log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "--no-first-run",
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                *sandbox,
                "about:blank",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.ids = iter(range(1, 1 << 31))
        try:
            port_file = self.profile / "DevToolsActivePort"
            wait_until(
                lambda: self.process.poll() is None and port_file.exists() and port_file.read_text().strip(),
                self.timeout,
                lambda: f"Chromium did not start:\n{self._log_tail()}",
            )
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                page = next(t for t in json.load(response) if t["type"] == "page")
            self.socket = websocket.create_connection(
                page["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True
            )
            self.call("Page.enable")
            items = json.dumps({**ASSISTANT_ALREADY_SHOWN, **(local_storage or {})})
            self.call(
                "Page.addScriptToEvaluateOnNewDocument",  # before the page's own scripts, on every page
                source=f"if (location.protocol === 'http:') for (const [k, v] of Object.entries({items})) "
                "localStorage.setItem(k, v);",
            )
            self.resize(width, height)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if hasattr(self, "socket"):
            self.socket.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _log_tail(self) -> str:
        self.log.flush()
        return (self.profile / "chromium.log").read_text()[-2000:]

    def call(self, method: str, **params) -> dict:
        """One DevTools command; its result (the events that arrive meanwhile are not needed here)."""
        command_id = next(self.ids)
        self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def resize(self, width: int, height: int) -> None:
        """The size of the page (and of the screenshots), in CSS pixels."""
        self.width, self.height = width, height
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def open(self, url: str) -> None:
        """Load `url` afresh (about:blank first, so a hash route of the same app is a new page too)."""
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, ready: Callable[[object], bool], what: str):
        """The value of `expression` in the page once `ready(value)`; AssertionError naming `what` and showing the
        page's text if it does not come within the timeout."""

        def value():
            found = self.evaluate(expression)
            return (found,) if ready(found) else None

        return wait_until(
            value,
            self.timeout,
            lambda: (
                f"{what}: not shown within {self.timeout} s; the page says:\n"
                f"{self.evaluate('document.body.innerText')[:1500]}"
            ),
        )[0]

    def click(self, element: str, what: str) -> None:
        """A mouse click in the middle of `element` (a JavaScript expression) once it is on the page, scrolled into
        view."""
        x, y = self.wait_for(
            f"(e => e && (e.scrollIntoView({{block: 'nearest'}}), "
            f"(r => [r.x + r.width / 2, r.y + r.height / 2])(e.getBoundingClientRect())))({element})",
            bool,
            what,
        )
        for event in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=event, x=x, y=y, button="left", clickCount=1)

    def pick(self, select: str, names: list[str]) -> None:
        """Choose `names`, in order, in the multiple-choice menu `select` (a JavaScript expression), as a user does:
        open it, type a name, click its entry, close it."""
        for name in names:
            self.click(select, "the menu")
            self.call("Input.insertText", text=name)
            self.click(
                f"document.querySelector('.du-bois-light-select-item-option[title={json.dumps(name)}]')",
                f"the menu's entry {name}",
            )
            for event in ("keyDown", "keyUp"):
                self.call("Input.dispatchKeyEvent", type=event, key="Escape", code="Escape", windowsVirtualKeyCode=27)

    def runs_table(self, names: set[str]) -> list[dict]:
        """The runs table's rows once it shows all of `names` (a name cell also holds the run's colour)."""

        def listed(rows: list[dict]) -> bool:
            return names <= {row.get(RUN_NAME, "").splitlines()[-1] for row in rows if row.get(RUN_NAME)}

        return self.wait_for(RUNS_TABLE, listed, f"the runs table listing {sorted(names)}")

    def screenshot(self, path: Path) -> None:
        """The page as shown, without the focus and hover marks of the last clicks."""
        self.evaluate("document.activeElement.blur()")
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=self.width // 2, y=self.height - 1)
        time.sleep(1)  # the last transitions and the plot's layout
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


TRACK_FILES = (
    "params.yaml",
    "dvc.lock",
    "metrics/train.json",
    "metrics/probe.json",
    "metrics/examples.json",
    "plots/train_loss.csv",
    "plots/train_loss.png",
    "plots/tsne.png",
    "plots/confusion.png",
)


def git_bytes(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, check=True).stdout


def trained_experiments(repo: Path) -> dict[str, str]:
    """{experiment name: its commit} for each DVC experiment of `repo` that trained an encoder of its own (its
    dvc.lock's encoder differs from the one of the commit it started from)."""
    refs = git_bytes(repo, "for-each-ref", "refs/exps", "--format=%(refname) %(objectname)").decode().split("\n")
    found = {}
    for name, commit in (line.rsplit("/", 1)[-1].split() for line in refs if line.strip()):
        trained = [encoder_md5(git_bytes(repo, "show", f"{rev}:dvc.lock")) for rev in (commit, f"{commit}^")]
        if trained[0] is not None and trained[0] != trained[1]:
            found[name] = commit
    return found


def encoder_md5(lock: bytes) -> str | None:
    """The md5 of the encoder that a dvc.lock's train stage wrote, if it has one."""
    train = yaml.safe_load(lock)["stages"].get("train", {})
    return next((out["md5"] for out in train.get("outs", []) if out["path"] == "models/encoder.pt"), None)


def track_experiment(repo: Path, name: str, commit: str, store: str, folder: Path) -> None:
    """Run the track stage on experiment `name`'s own files (git for the small ones, DVC's cache for the encoder;
    the dataset from this checkout) in `folder`, logging it to `store` without baselines."""
    for path in TRACK_FILES:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(git_bytes(repo, "show", f"{commit}:{path}"))
    md5 = encoder_md5((folder / "dvc.lock").read_bytes())
    assert md5, f"{name} trained no encoder"
    dvc = str(Path(sys.executable).parent / "dvc")
    cache = Path(
        subprocess.run([dvc, "cache", "dir"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    )
    (folder / "models").mkdir()
    shutil.copy(cache / "files" / "md5" / md5[:2] / md5[2:], folder / "models/encoder.pt")
    dataset = yaml.safe_load((folder / "params.yaml").read_text())["dataset"]
    (folder / "data/datasets").mkdir(parents=True)
    data = ROOT / "data/datasets" / dataset
    assert (data / "meta.json").exists(), f"{data} is missing: `dvc repro download -S dataset={dataset}` writes it"
    (folder / "data/datasets" / dataset).symlink_to(data)
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages/track.py"), "--data", f"data/datasets/{dataset}",
         "--train-metrics", "metrics/train.json", "--probe-metrics", "metrics/probe.json",
         "--examples-metrics", "metrics/examples.json", "--loss-csv", "plots/train_loss.csv",
         "--encoder", "models/encoder.pt", "--artifacts", "plots/tsne.png", "plots/confusion.png",
         "plots/train_loss.png"],
        cwd=folder, env={**os.environ, "MLFLOW_TRACKING_URI": store, "DVC_EXP_NAME": name},
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, f"tracking {name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def tree_node(title: str, part: str, after: str = "") -> str:
    """A JavaScript expression: `part` (a class of MLflow's tree) of the open menu's first node whose title starts
    with `title`, among the nodes below the first one titled `after` (if given)."""
    nodes = "[...document.querySelectorAll('[role=menu] .du-bois-light-tree-treenode')]"
    titled = "t => n => n.querySelector('.du-bois-light-tree-title')?.textContent.trim().startsWith(t)"
    return (
        f"((nodes, titled) => nodes.slice(nodes.findIndex(titled({json.dumps(after)})))"
        f".find(titled({json.dumps(title)}))?.querySelector('.du-bois-light-tree-{part}'))({nodes}, {titled})"
    )


def take_models(store: str, out: Path, workdir: Path) -> None:
    """The experiment's Models view (MLflow's logged models) once it lists every logged encoder, showing of each
    its probe's and kNN's top-1 on its dataset's test images (MLflow groups metrics by the dataset they were
    measured on); the other columns are hidden through the view's Columns menu, as a user would."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    models = client.search_logged_models([experiment_id])
    assert models, f"no logged model in {store}: pass --encoders with a repository whose experiments trained some"
    datasets = sorted(
        {metric.dataset_name for model in models for metric in model.metrics or [] if metric.dataset_name}
    )
    with mlflow_ui(store, workdir / "mlflow-ui-models.log") as server, Chromium() as browser:
        browser.resize(1600, 1000)  # room for the Columns menu
        browser.open(f"{server}/#/experiments/{experiment_id}/models?workflowType=machine_learning")
        browser.wait_for(
            "document.querySelectorAll('.ag-row[row-id]').length",
            lambda rows: rows >= len(models),
            f"the Models view listing {len(models)} encoders",
        )
        browser.click("[...document.querySelectorAll('button')].find(e => e.innerText.trim() == 'Columns')", "Columns")

        def toggle(node: str, what: str) -> None:  # a click event on the element itself: the tree animates
            browser.wait_for(f"!!({node})", bool, what)
            browser.evaluate(f"({node}).click()")
            time.sleep(0.3)

        for dataset in datasets:
            node = f"Dataset: {dataset} "
            toggle(tree_node(node, "checkbox"), f"the metrics of {dataset}")  # all off, then the two on
            toggle(tree_node(node, "switcher"), f"the metrics of {dataset}, opened")
            for metric in ("probe_top1", "knn_top1"):
                toggle(tree_node(metric, "checkbox", after=node), f"{metric} of {dataset}")
            toggle(tree_node(node, "switcher"), f"the metrics of {dataset}, closed")
        for hidden in ("Status", "Logged from", "Registered models", "Parameters"):
            toggle(tree_node(hidden, "checkbox"), f"the column {hidden}")
        for event in ("keyDown", "keyUp"):
            browser.call("Input.dispatchKeyEvent", type=event, key="Escape", code="Escape", windowsVirtualKeyCode=27)
        headers = "[...document.querySelectorAll('.ag-header-cell-text')].map(e => e.textContent.trim())"
        browser.wait_for(
            headers,
            lambda shown: shown.count("probe_top1") == len(datasets) and "Status" not in shown,
            f"the probe's top-1 on each of {datasets}, and no other metric",
        )
        browser.resize(1900, 330 + 45 * len(models))  # the rows, no empty space below
        browser.screenshot(out / "mlflow_models.png")


def take(store: str, out: Path, workdir: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    scenarios = f"tags.study = '{PROTOCOL_STUDY}' and tags.seed = '0'"
    runs = client.search_runs([experiment_id], filter_string=scenarios)
    assert len(runs) == 12, f"{len(runs)} runs match {scenarios} in {store}, not the protocol's 12 scenarios"
    columns = [
        PROBE_TOP1,
        "metrics.`knn_top1`",
        "tags.`dataset`",
        "tags.`loss`",
        "tags.`aug`",
        "params.`resolved.epochs`",
        "params.`resolved.lr`",
    ]
    view = runs_view(
        experiment_id,
        searchFilter=scenarios,
        orderByKey=PROBE_TOP1,
        orderByAsc=False,
        selectedColumns=columns,
        columnOrder=[RUN_NAME, "duration", *columns],
        columnWidths={RUN_NAME: 270, "tags.`aug`": 150, "params.`resolved.epochs`": 140},
    )
    with mlflow_ui(store, workdir / "mlflow-ui.log") as server, Chromium(view) as browser:
        browser.resize(1600, 760)  # the 12 rows, no empty space below
        browser.open(runs_url(server, experiment_id))
        browser.runs_table({run.info.run_name for run in runs})
        browser.screenshot(out / "mlflow_runs.png")
        browser.resize(1600, 1000)
        browser.open(compare_url(server, experiment_id, [run.info.run_id for run in runs]))
        # The plot's default axes are the first three differing params by name (aug, dataset, download.datasets).
        browser.click("document.querySelector('[data-testid=clear-button]')", "the Compare view's Clear All button")
        menus = "document.querySelectorAll('.du-bois-light-select-selector')"
        browser.pick(f"{menus}[0]", ["dataset", "loss", "aug"])
        browser.pick(f"{menus}[1]", ["probe_top1"])
        browser.wait_for(
            "document.querySelectorAll('.js-plotly-plot').length", bool, "the Compare view's parallel-coordinates plot"
        )
        browser.screenshot(out / "mlflow_compare.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="a tracking URI holding the import (default: import into a temporary store)")
    parser.add_argument("--results", type=Path, default=ROOT / "study" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--encoders", type=Path, help="also log the encoders of this repository's DVC experiments")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="contrastlab-screenshots-") as tmp:
        store = args.store
        if store is None:
            store = temporary_store(Path(tmp))
            print(f"importing {args.results} into {store} ...", flush=True)
            print(import_results(args.results.resolve(), store, timeout=3600).strip().splitlines()[-1])
        take(store, args.out, Path(tmp))
        if args.encoders:
            for name, commit in trained_experiments(args.encoders).items():
                print(f"logging the encoder of {name} ...", flush=True)
                track_experiment(args.encoders, name, commit, store, Path(tmp) / name)
            take_models(store, args.out, Path(tmp))
    print(f"wrote the screenshots in {args.out}")


if __name__ == "__main__":
    main()
