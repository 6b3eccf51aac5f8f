"""The MLflow UI in a real browser: the runs table lists what `make mlflow` imported, nested per study.

Starts `mlflow ui` on 127.0.0.1 and headless Chromium (Debian's `chromium`) with docs/screenshots.py, which
takes the README's pictures the same way. Skipped without Chromium unless CONTRASTLAB_REQUIRE_CHROMIUM=1
(as in .ci/run, which installs it), where its absence fails.
"""

from __future__ import annotations

import os
import shutil

import mlflow
import pytest

from contrastlab.infra.tracking import EXPERIMENT, runs_url, tracking_uri
from contrastlab.study.import_runs import import_results
from project import ROOT
from screenshots import PROBE_TOP1, RUN_NAME, Chromium, chromium, mlflow_ui, runs_view

pytestmark = pytest.mark.browser

SCENARIOS = ["mnist-triplet-simclr-s0", "cifar10-pairwise-none-s0"]
BASELINE = "baseline-mnist-raw_pixels-s0"


@pytest.fixture(scope="module")
def browser_found():
    if chromium() is None:
        if os.environ.get("CONTRASTLAB_REQUIRE_CHROMIUM") == "1":
            pytest.fail("Chromium not found (apt-get install chromium)")
        pytest.skip("Chromium not found (apt-get install chromium)")


def test_the_runs_page_lists_the_imported_runs_and_their_studies_with_probe_top1(browser_found, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in [*SCENARIOS, BASELINE]:
        shutil.copytree(ROOT / "study" / "results" / name, tmp_path / "results" / name)
    assert import_results(tmp_path / "results", tmp_path)[:2] == (3, 0)
    uri = tracking_uri(tmp_path)
    client = mlflow.MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    logged = {run.info.run_name: run for run in client.search_runs([experiment_id])}
    parents = [run.info.run_id for run in logged.values() if "mlflow.parentRunId" not in run.data.tags]
    # The page as a user leaves it after expanding both parents and adding the probe_top1 column.
    view = runs_view(experiment_id, runsExpanded={run_id: True for run_id in parents}, selectedColumns=[PROBE_TOP1])

    with mlflow_ui(uri, tmp_path / "mlflow-ui.log") as server, Chromium(view) as browser:
        browser.open(runs_url(server, experiment_id))
        rows = browser.runs_table({*SCENARIOS, BASELINE, "study: protocol recipe", "baselines"})

    shown = {row[RUN_NAME].splitlines()[-1]: row for row in rows}
    assert set(shown) == set(logged) == {*SCENARIOS, BASELINE, "study: protocol recipe", "baselines"}
    for name in [*SCENARIOS, BASELINE]:
        assert shown[name][PROBE_TOP1] == f"{logged[name].data.metrics['probe_top1']:g}"
