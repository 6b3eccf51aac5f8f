import math

import pytest
import torch
from pytorch_metric_learning import losses as pml

from contrastlab.methods.losses import LOSSES, LossOptions, semi_hard_negatives


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


def test_triplet_margin_is_an_option():
    anchor, positive, negative = torch.zeros(1, 2), torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 2.0]])
    got = LOSSES["triplet"].fn([anchor, positive, negative], torch.ones(1), options=LossOptions(margin=3.0))
    assert torch.isclose(got, torch.tensor(1 - 2 + 3.0), atol=1e-4)


def test_contrastive_is_hadsell_computed_by_hand():
    first = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    second = torch.tensor([[3.0, 4.0], [0.0, 0.5], [0.0, 2.0]])  # d = 5, 0.5, 2
    target = torch.tensor([1.0, -1.0, -1.0])
    expected = (5.0**2 + (1 - 0.5) ** 2 + 0.0) / 3  # similar: d^2; dissimilar: max(0, 1 - d)^2
    got = LOSSES["contrastive"].fn([first, second], target, options=LossOptions(margin=1.0))
    assert torch.isclose(got, torch.tensor(expected))


def test_contrastive_has_a_gradient_when_a_pair_coincides():
    first = torch.zeros(2, 3, requires_grad=True)
    LOSSES["contrastive"].fn([first, torch.zeros(2, 3)], torch.tensor([1.0, -1.0])).backward()
    assert torch.isfinite(first.grad).all()


def unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows), dim=1)


def cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_ntxent_is_simclr_computed_by_hand():
    first, second = unit([1.0, 0.0], [0.6, 0.8]), unit([0.8, 0.6], [0.0, 1.0])
    views, tau = [first[0], first[1], second[0], second[1]], 0.5
    partner = {0: 2, 1: 3, 2: 0, 3: 1}
    terms = []
    for i in range(4):  # -log( e^{s(i,p)/t} / sum_{k != i} e^{s(i,k)/t} ), averaged over the 2B views
        denominator = sum(math.exp(cos(views[i], views[k]) / tau) for k in range(4) if k != i)
        terms.append(-math.log(math.exp(cos(views[i], views[partner[i]]) / tau) / denominator))
    got = LOSSES["ntxent"].fn([first, second], torch.ones(2), options=LossOptions(temperature=tau))
    assert got.item() == pytest.approx(sum(terms) / 4, rel=1e-5)


def test_ntxent_equals_pytorch_metric_learnings_and_fits_a_study_sized_batch():
    a, b = torch.randn(64, 32, generator=torch.Generator().manual_seed(0)), torch.randn(64, 32)
    index = torch.arange(64)
    reference = pml.NTXentLoss(temperature=0.5)(torch.cat([a, b]), torch.cat([index, index]))
    assert LOSSES["ntxent"].fn([a, b], torch.ones(64)).item() == pytest.approx(reference.item(), rel=1e-5)
    # pml's version asks for 34 GB at the study's batch of 1024 images; this one needs a few MB
    views = [torch.randn(1024, 32, requires_grad=True) for _ in range(2)]
    LOSSES["ntxent"].fn(views, torch.ones(1024)).backward()
    assert views[0].grad.abs().sum() > 0


def test_supcon_is_khosla_computed_by_hand():
    first, second = unit([1.0, 0.0], [0.6, 0.8], [0.0, 1.0]), unit([0.8, 0.6], [0.0, 1.0], [-1.0, 0.2])
    labels = torch.tensor([0, 0, 1])
    views, classes, tau = [*first, *second], [0, 0, 1, 0, 0, 1], 0.1
    terms = []
    for i in range(6):  # -1/|P(i)| sum_p log( e^{s(i,p)/t} / sum_{a != i} e^{s(i,a)/t} )
        others = [a for a in range(6) if a != i]
        positives = [p for p in others if classes[p] == classes[i]]
        log_denominator = math.log(sum(math.exp(cos(views[i], views[a]) / tau) for a in others))
        terms.append(-sum(cos(views[i], views[p]) / tau - log_denominator for p in positives) / len(positives))
    got = LOSSES["supcon"].fn([first, second], torch.ones(3), labels, LossOptions(temperature=tau))
    assert got.item() == pytest.approx(sum(terms) / 6, rel=1e-4)


def test_semi_hard_negative_is_farther_than_the_positive_but_within_the_margin():
    anchor, positive = torch.zeros(2, 1), torch.tensor([[1.0], [1.0]])
    pool = torch.tensor([[0.5], [1.5], [3.0], [1.25]])  # distances 0.5, 1.5, 3, 1.25 from each anchor
    pool_labels = torch.tensor([1, 1, 1, 0])
    # anchor 0 (class 0): semi-hard in (1, 2) of another class: 1.5 (1.25 is its own class) -> index 1
    # anchor 1 (class 1): only pool[3] has another class, and it is semi-hard -> index 3
    chosen = semi_hard_negatives(anchor, positive, pool, torch.tensor([0, 1]), pool_labels, margin=1.0)
    assert chosen.tolist() == [[1.5], [1.25]]


def test_without_a_semi_hard_candidate_the_farthest_other_class_is_taken():
    chosen = semi_hard_negatives(
        torch.zeros(1, 1),
        torch.tensor([[1.0]]),
        torch.tensor([[5.0], [0.25], [9.0]]),
        torch.tensor([0]),
        torch.tensor([1, 1, 0]),
        margin=1.0,
    )
    assert chosen.tolist() == [[5.0]]  # 9.0 is farther but of the anchor's own class


def test_vicreg_is_bardes_computed_by_hand():
    first = torch.tensor([[0.0, 0.0], [2.0, 2.0]])  # each coordinate's variance 2 (std above 1: no hinge),
    second = torch.tensor([[0.0, 2.0], [2.0, 0.0]])  # covariance +2 in the first view, -2 in the second
    invariance = (0 + 4 + 0 + 4) / 4
    covariance = (2**2 + 2**2) / 2  # squared off-diagonal entries over D, per view
    loss = LOSSES["vicreg"].fn([first, second], torch.ones(2))
    assert loss.item() == pytest.approx(25 * invariance + 25 * 0 + 1 * (covariance + covariance))


def test_vicregs_variance_term_is_the_mean_hinge_on_each_coordinates_std():
    first = torch.tensor([[0.0, 0.0], [1.0, 1.0]])  # variance 0.5: std below 1
    second = torch.tensor([[0.0, 0.0], [4.0, 4.0]])  # variance 8: no hinge
    only_variance = LossOptions(invariance=0.0, variance=1.0, covariance=0.0)
    loss = LOSSES["vicreg"].fn([first, second], torch.ones(2), options=only_variance)
    assert loss.item() == pytest.approx((1 - math.sqrt(0.5 + 1e-4)) / 2)


def test_barlow_twins_is_zbontar_computed_by_hand():
    first = torch.tensor([[0.0, 0.0], [2.0, 2.0]])  # standardised over the batch: both coordinates -1, +1
    second = torch.tensor([[0.0, 2.0], [2.0, 0.0]])  # -1, +1 and +1, -1: cross-correlation [[1, -1], [1, -1]]
    on_diagonal, off_diagonal = (1 - 1) ** 2 + (1 - -1) ** 2, 1**2 + 1**2
    loss = LOSSES["barlow_twins"].fn([first, second], torch.ones(2), options=LossOptions(redundancy=0.5))
    assert loss.item() == pytest.approx(on_diagonal + 0.5 * off_diagonal, rel=1e-4)  # batch_norm's eps


def test_protocol_defaults_per_loss():
    assert (LOSSES["pairwise"].lr, LOSSES["pairwise"].epochs, LOSSES["pairwise"].examples) == (0.05, 5, "pairs")
    assert (LOSSES["triplet"].lr, LOSSES["triplet"].epochs, LOSSES["triplet"].examples) == (0.15, 10, "triplets")
    assert [LOSSES[name].examples for name in ("contrastive", "ntxent", "supcon", "vicreg", "barlow_twins")] == [
        "pairs",
        "views",
        "views",
        "views",
        "views",
    ]
