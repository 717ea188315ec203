"""Class balance (data.balance): the balanced epoch order and its sampler under 1 and 2 processes
(class frequencies, determinism, mid-epoch skip), the loader on a skewed subset of the synthetic
set, and the loss's class weights against hand computation.

Tolerance of "uniform": the draw is exact, so over one epoch of N draws every class with videos is
drawn ``N // P`` or ``N // P + 1`` times (P classes; the ``N % P`` extra draws go to distinct
classes). Over 2 processes the union of the ranks' shares adds DistributedSampler's padding, at
most 1 draw (R - 1 for R ranks), so a class count may exceed that by 1. A random weighted draw
(``WeightedRandomSampler``) would only be uniform in expectation: with N = 54 and P = 4, each count
is Binomial(54, 1/4), sd 3.2 around 13.5, which a tolerance of 1 would reject most of the time.
"""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from data_helpers import small_cfg
from videokit import write_skewed_split

from videoattn.data import build_dataset, build_loader
from videoattn.data.balance import Balance, balanced_order, class_weights, weighted_cross_entropy
from videoattn.data.samplers import BalancedDistributedSampler

# 54 videos of 4 classes, 40:8:5:1 (the rarest 40x rarer than the most frequent), shuffled
SKEWED = torch.tensor([0] * 40 + [1] * 8 + [2] * 5 + [3] * 1)[
    torch.randperm(54, generator=torch.Generator().manual_seed(1))
]


def _class_counts(indices, labels):
    return Counter(labels[torch.as_tensor(list(indices))].tolist())


def test_one_epoch_draws_every_class_equally_often_from_a_fresh_walk_of_its_videos():
    for epoch in range(5):
        order = balanced_order(SKEWED, torch.Generator().manual_seed(epoch))
        assert order.shape == (54,)
        counts = _class_counts(order, SKEWED)
        assert sorted(counts.values()) == [13, 13, 14, 14]  # 54 = 4 x 13 + 2: exact
        per_video = Counter(order.tolist())
        rare = (SKEWED == 3).nonzero().item()
        assert per_video[rare] == counts[3]  # the only video of class 3, 13 or 14 times
        for c, n in ((0, 40), (1, 8), (2, 5)):
            videos = [per_video[i] for i in (SKEWED == c).nonzero().flatten().tolist()]
            low = counts[c] // n
            assert set(videos) <= {low, low + 1}  # each video of the class floor or ceil times
    a, b = (balanced_order(SKEWED, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a, b)  # the same seed: the same order (every rank computes it alone)
    assert not torch.equal(a, balanced_order(SKEWED, torch.Generator().manual_seed(8)))


@pytest.mark.parametrize("world", [1, 2])
def test_the_ranks_shares_together_are_one_balanced_epoch(world):
    """``world`` ranks of BalancedDistributedSampler (exactly as build_loader makes them): the
    union of the shares is the epoch's balanced order (plus padding under 2 ranks: 54 is even, so
    none; 53 items need 1), each class within the stated tolerance."""
    for labels in (SKEWED, SKEWED[:53]):
        n = len(labels)
        for epoch in (0, 3):
            shares = []
            for rank in range(world):
                sampler = BalancedDistributedSampler(list(range(n)), labels.tolist(), world, rank, seed=11)
                sampler.set_epoch(epoch)
                shares.append(list(sampler))
            assert len({len(s) for s in shares}) == 1 and len(shares[0]) == -(-n // world)
            union = [i for s in shares for i in s]
            counts = _class_counts(union, labels)
            low = n // 4
            padding = len(union) - n
            assert padding == (world - n % world) % world
            assert all(low <= counts[c] <= low + 1 + padding for c in range(4)), counts
            assert sum(counts[c] - low for c in range(4)) == n % 4 + padding
            # the same draw as one process, dealt out in turn (DistributedSampler's interleaving)
            whole = balanced_order(labels, torch.Generator().manual_seed(11 + epoch)).tolist()
            assert shares[world - 1] == (whole + whole[:padding])[world - 1 :: world]
            assert sorted(union) == sorted(whole + whole[:padding])


def test_a_mid_epoch_resume_skips_the_first_draws_of_the_same_share():
    def sampler(rank):
        return BalancedDistributedSampler(list(range(54)), SKEWED.tolist(), num_replicas=2, rank=rank, seed=5)

    whole, resumed = sampler(1), sampler(1)
    whole.set_epoch(2)
    order = list(whole)
    resumed.set_epoch(2, skip=10)
    assert len(resumed) == 17 and list(resumed) == order[10:]
    assert len(resumed) == 27 and list(resumed) == order  # the next pass (precise BN) is whole
    whole.set_epoch(3)
    assert list(whole) != order  # a new draw each epoch
    with pytest.raises(ValueError, match="cannot skip 28 of the 27"):
        resumed.set_epoch(3, skip=28)
    with pytest.raises(ValueError, match="3 labels for 54 items"):
        BalancedDistributedSampler(list(range(54)), [0, 1, 2], 1, 0)


@pytest.fixture(scope="module")
def skewed_csv(synthetic_root, tmp_path_factory):
    """Class 0 with 5 videos (its 3 train and 2 val ones), every other class with 1: 12 videos, 5:1."""
    return write_skewed_split(synthetic_root, str(tmp_path_factory.mktemp("skewed") / "train.csv"), [5] + [1] * 7)


def test_the_training_loader_draws_the_skewed_set_evenly(synthetic_root, skewed_csv, tmp_path):
    cfg = small_cfg(synthetic_root, str(tmp_path), f"data.train_split={skewed_csv}", "data.classes_file=classes.txt")
    dataset = build_dataset(cfg.data, "train")
    labels = torch.tensor([y for _, y in dataset.videos])
    assert sorted(Counter(labels.tolist()).values()) == [1] * 7 + [5]
    plain = build_loader(dataset, cfg.data, 4, seed=0)
    plain.sampler.set_epoch(0)
    assert sorted(plain.sampler) == list(range(12))  # balance=none: each video once
    cfg = small_cfg(
        synthetic_root,
        str(tmp_path),
        f"data.train_split={skewed_csv}",
        "data.classes_file=classes.txt",
        "data.balance=sampler",
    )
    loader = build_loader(dataset, cfg.data, 4, seed=0)
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        drawn = list(loader.sampler)
        counts = _class_counts(drawn, labels)
        assert len(drawn) == 12 and sorted(counts.values()) == [1] * 4 + [2] * 4  # 12 = 8 x 1 + 4
    assert len(loader) == 3  # 12 draws in batches of 4, as balance=none
    line = Balance.of("sampler", labels.tolist(), 8).describe()
    assert line == (
        "class balance sampler: 12 videos in 8 of 8 classes, 1..5 per class; "
        "each epoch draws 12 videos, 1 or 2 of each class"
    )


def test_class_weights_hand_computed_mean_one_over_the_videos():
    labels = [0] * 6 + [1] * 3 + [2] * 1  # class 3 has no video
    w = class_weights(labels, 4)
    # w_c = N / (P n_c) = 10 / (3 n_c)
    assert w.tolist() == pytest.approx([10 / 18, 10 / 9, 10 / 3, 0.0])
    assert w[torch.tensor(labels)].mean().item() == pytest.approx(1.0)  # mean over the samples
    assert (w[:3] * torch.tensor([6, 3, 1])).tolist() == pytest.approx([10 / 3] * 3)  # equal weight per class
    line = Balance.of("loss", labels, 4).describe()
    assert line == (
        "class balance loss: 10 videos in 3 of 4 classes, 1..6 per class; "
        "loss weights 0.5556..3.333 (mean 1 over the videos)"
    )
    assert torch.equal(class_weights([2, 2, 0, 0], 3), torch.tensor([1.0, 0.0, 1.0]))  # balanced: 1


def test_the_weighted_loss_is_the_per_sample_mean_not_the_weight_normalised_one():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.2, 0.1], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 2])
    w = torch.tensor([0.5, 2.0, 4.0])
    ce = [-(torch.log_softmax(logits[i], 0)[labels[i]]).item() for i in range(4)]
    expected = (0.5 * ce[0] + 0.5 * ce[1] + 2.0 * ce[2] + 4.0 * ce[3]) / 4
    assert weighted_cross_entropy(logits, labels, w).item() == pytest.approx(expected, rel=1e-6)
    # PyTorch's weight= divides by the batch's weight sum (7.0) instead of its size (4)
    assert F.cross_entropy(logits, labels, weight=w).item() == pytest.approx(expected * 4 / 7, rel=1e-6)
    assert weighted_cross_entropy(logits, labels, torch.ones(3)).item() == pytest.approx(
        F.cross_entropy(logits, labels).item()
    )
