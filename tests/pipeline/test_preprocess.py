import torch

from contrastlab.pipeline.preprocess import normalize, to_unit


def test_normalize_and_to_unit():
    assert torch.equal(normalize(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))
    unit = to_unit(torch.tensor([0, 51, 255], dtype=torch.uint8))
    assert unit.dtype == torch.float32
    assert torch.equal(unit, torch.tensor([0.0, 0.2, 1.0]))
