import torch

from contrastlab.losses import LOSSES


def test_pairwise_is_cosine_embedding_loss_computed_by_hand():
    first = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    second = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # cos = 1/sqrt(2) for both
    target = torch.tensor([1.0, -1.0])
    cos = 2**-0.5
    expected = ((1 - cos) + max(0.0, cos)) / 2
    assert torch.isclose(LOSSES["pairwise"].fn([first, second], target), torch.tensor(expected))


def test_triplet_is_margin_one_euclidean_computed_by_hand():
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[3.0, 4.0], [0.0, 0.5]])  # d(a,p) = 5, 0.5
    negative = torch.tensor([[0.0, 1.0], [0.0, 3.0]])  # d(a,n) = 1, 3
    expected = (max(0, 5 - 1 + 1) + max(0, 0.5 - 3 + 1)) / 2  # (5 + 0) / 2
    got = LOSSES["triplet"].fn([anchor, positive, negative], torch.ones(2))
    assert torch.isclose(got, torch.tensor(expected), atol=1e-4)


def test_protocol_defaults_per_loss():
    assert (LOSSES["pairwise"].lr, LOSSES["pairwise"].epochs, LOSSES["pairwise"].examples) == (0.05, 5, "pairs")
    assert (LOSSES["triplet"].lr, LOSSES["triplet"].epochs, LOSSES["triplet"].examples) == (0.15, 10, "triplets")
