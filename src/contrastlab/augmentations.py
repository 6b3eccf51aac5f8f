"""The augmentations, by name: `AUGMENTATIONS["simclr"](images, generator)` on float images in [0, 1];
`-S aug=<name>` finds the same registry, `register` adds one.

    from contrastlab.augmentations import AUGMENTATIONS, register, small_crops
"""

from contrastlab.methods.augmentations import AUGMENTATIONS, register, small_crops

__all__ = ["AUGMENTATIONS", "register", "small_crops"]
