"""Layer letters, Needleman-Wunsch against hand-worked cases, matrix, shortlist, heatmap."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mice2machines.models import archsim
from mice2machines.neurn import NeuRN


@pytest.mark.parametrize(
    ("a", "b", "params", "expected"),
    [
        # the textbook example: G-ATTACA / GCA-TGCU, 4 matches, 2 mismatches, 2 gaps
        ("GATTACA", "GCATGCU", (1, -1, -1), 0.0),
        ("CRM", "CRM", (1, -1, -1), 3.0),
        ("CR", "", (1, -1, -1), -2.0),
        ("", "", (1, -1, -1), 0.0),
        # CRCRM / C-CRM: 4 matches and one gap
        ("CRCRM", "CCRM", (1, -1, -1), 3.0),
        # AB vs BA, match 2, mismatch -3, gap -1: two mismatches = -6; AB- / -BA = -1 + 2 - 1 = 0
        ("AB", "BA", (2, -3, -1), 0.0),
        # same with a cheap mismatch: two mismatches (-2) beat 0? no: -1 -1 = -2 < 0, still 0
        ("AB", "BA", (2, -1, -1), 0.0),
        # gaps expensive: two mismatches -2 beat gap+match+gap = -5 + 2 - 5 = -8
        ("AB", "BA", (2, -1, -5), -2.0),
    ],
)
def test_nw_hand_worked(a, b, params, expected):
    match, mismatch, gap = params
    assert archsim.nw_score(a, b, match, mismatch, gap) == expected
    assert archsim.nw_score(b, a, match, mismatch, gap) == expected
    score, ra, rb = archsim.nw_align(a, b, match, mismatch, gap)
    assert score == expected
    # the alignment is consistent with its score
    assert ra.replace("-", "") == a and rb.replace("-", "") == b and len(ra) == len(rb)
    rescored = sum(
        gap if "-" in (x, y) else (match if x == y else mismatch)
        for x, y in zip(ra, rb, strict=True)
    )
    assert rescored == expected


def test_textbook_alignment():
    assert archsim.nw_align("GATTACA", "GCATGCU")[1:] == ("G-ATTACA", "GCA-TGCU")


def test_vectorised_score_equals_full_dp():
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = "".join(rng.choice(list("CRBML"), size=rng.integers(0, 25)))
        b = "".join(rng.choice(list("CRBML"), size=rng.integers(0, 25)))
        params = (float(rng.integers(1, 4)), -float(rng.integers(0, 4)), -float(rng.integers(1, 4)))
        assert archsim.nw_score(a, b, *params) == archsim.nw_align(a, b, *params)[0]


class _SamePadConv(nn.Conv2d):
    """A Conv2d subclass with a child, like EfficientNet's static same-padding conv."""

    def __init__(self):
        super().__init__(3, 4, 3)
        self.pad = nn.ZeroPad2d(1)


def test_layer_sequence_letters():
    model = nn.Sequential(
        NeuRN(),
        _SamePadConv(),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.GELU(), nn.Identity()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(),
        nn.LayerNorm(4),
        nn.MultiheadAttention(4, 2),
        nn.Linear(4, 2),
        nn.PixelShuffle(1),
    )
    assert archsim.layer_sequence(model) == "KCBRMCAGFDNTLX"
    assert archsim.layer_sequence(model, letters={"Conv2d": "c"}) == "Xc" + "XXX" + "cX" + "X" * 7


def test_similarity_matrix_and_normalisation():
    seqs = {"a": "CRCRM", "b": "CCRM", "c": "LLLL"}
    raw = archsim.similarity_matrix(seqs, normalize="none")
    assert raw.loc["a", "b"] == raw.loc["b", "a"] == 3.0
    assert raw.loc["a", "a"] == 5.0
    norm = archsim.similarity_matrix(seqs, normalize="max")
    assert norm.loc["a", "b"] == pytest.approx(3 / 5)
    np.testing.assert_allclose(np.diag(norm), 1.0)
    assert archsim.similarity_matrix(seqs, normalize="mean").loc["a", "b"] == pytest.approx(3 / 4.5)
    with pytest.raises(ValueError):
        archsim.similarity_matrix(seqs, normalize="bogus")


def test_shortlist_picks_one_per_family():
    names = ["a1", "a2", "b1", "b2", "c1"]
    fam = [n[0] for n in names]
    vals = np.array(
        [
            [1.0 if i == j else (0.9 if fam[i] == fam[j] else 0.1) for j in range(5)]
            for i in range(5)
        ]
    )
    vals[4, :4] = vals[:4, 4] = 0.05  # c1 is the most distinct
    sim = pd.DataFrame(vals, index=names, columns=names)
    picked = archsim.shortlist(sim, 3)
    assert picked[0] == "c1"
    assert {p[0] for p in picked} == {"a", "b", "c"}
    assert archsim.shortlist(sim, 2, start="a2")[0] == "a2"
    assert archsim.shortlist(sim, 10) == picked + [n for n in archsim.shortlist(sim, 5)[3:]]


def test_heatmap_written(tmp_path):
    seqs = {"x": "CRM", "y": "CRCRM", "z": "LL", "w": "CRMM"}
    sim = archsim.similarity_matrix(seqs)
    order = archsim.cluster_order(sim)
    assert sorted(order) == sorted(seqs)
    fig = archsim.plot_similarity(sim, tmp_path / "sim.png")
    assert (tmp_path / "sim.png").stat().st_size > 1000
    assert len(fig.axes[0].get_xticklabels()) == 4


def test_torchvision_families_are_more_alike():
    from mice2machines.models.zoo import ModelSpec, build_architecture

    seqs = {
        arch: archsim.layer_sequence(
            build_architecture(ModelSpec(arch, f"torchvision:{arch}", "random", 64))
        )
        for arch in ("resnet18", "resnet34", "vgg11", "vgg13")
    }
    assert all(set(s) <= set(archsim.LETTERS.values()) | {"X"} for s in seqs.values())
    sim = archsim.similarity_matrix(seqs)
    assert sim.loc["resnet18", "resnet34"] > sim.loc["resnet18", "vgg11"]
    assert sim.loc["vgg11", "vgg13"] > sim.loc["vgg13", "resnet34"]
    assert (
        torch.device("meta")
        == next(
            build_architecture(ModelSpec("r", "torchvision:resnet18", "random", 64)).parameters()
        ).device
    )
