"""The encoders, by name: `make_encoder(channels, arch="vgg_small")`; `-S model.arch=<name>` finds the same
registry. `load_encoder` rebuilds a saved one (the pipeline's `models/encoder.pt`, weights only).

    from contrastlab.encoders import ARCHS, HEADS, Encoder, load_encoder, make_encoder, save_encoder
"""

from contrastlab.methods.encoders import ARCHS, HEADS, Encoder, load_encoder, make_encoder, save_encoder

__all__ = ["ARCHS", "HEADS", "Encoder", "load_encoder", "make_encoder", "save_encoder"]
