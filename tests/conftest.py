"""The suite computes on the CPU on purpose, whatever GPU the machine has: its exact numbers (committed digests, the
tiny scenario's top-1) are the CPU's, and CPU and GPU round differently. `train.device: auto` reads CONTRASTLAB_DEVICE,
so every stage the tests start inherits the choice; the tests marked `gpu` (tests/gpu) name CUDA themselves."""

import os

from contrastlab.infra.machine import DEVICE_ENV

os.environ[DEVICE_ENV] = "cpu"
