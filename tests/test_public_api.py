"""The library others import: `contrastlab.losses`, `.augmentations` and `.encoders` hold the registries the pipeline
uses, and importing them changes nothing global (torch's settings, the environment) and pulls in no pipeline tool."""

from __future__ import annotations

import json
import subprocess
import sys

import contrastlab.augmentations
import contrastlab.encoders
import contrastlab.losses
from contrastlab.methods import augmentations, encoders, losses

FRESH_IMPORT = """
import json, os, sys, torch
def state():
    return [torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(), str(torch.get_default_dtype()),
            torch.backends.mkldnn.enabled, torch.backends.cudnn.benchmark, dict(os.environ)]
before = state()
import contrastlab.augmentations, contrastlab.encoders, contrastlab.losses
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"dvc", "mlflow", "dask", "distributed", "matplotlib"})
print(json.dumps({"unchanged": state() == before, "heavy": heavy}))
"""


def test_the_public_modules_are_the_registries_the_pipeline_uses():
    assert contrastlab.losses.LOSSES is losses.LOSSES and "vicreg" in contrastlab.losses.LOSSES
    assert contrastlab.augmentations.AUGMENTATIONS is augmentations.AUGMENTATIONS
    assert contrastlab.encoders.ARCHS is encoders.ARCHS and contrastlab.encoders.make_encoder is encoders.make_encoder
    for module in (contrastlab.losses, contrastlab.augmentations, contrastlab.encoders):
        assert all(hasattr(module, name) for name in module.__all__)


def test_importing_the_public_api_changes_no_global_setting_and_pulls_in_no_pipeline_tool():
    done = subprocess.run([sys.executable, "-c", FRESH_IMPORT], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == {"unchanged": True, "heavy": []}
