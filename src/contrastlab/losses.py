"""The losses, by name: `LOSSES["ntxent"].fn(...)`; `-S loss=<name>` finds the same registry.

from contrastlab.losses import LOSSES, Loss, multi_crop
"""

from contrastlab.methods.losses import LOSSES, Loss, LossOptions, multi_crop

__all__ = ["LOSSES", "Loss", "LossOptions", "multi_crop"]
