"""Retrieval metrics: hand-computed ranks, the tie rule, input types and refusals."""
import itertools

import numpy as np
import pytest
import torch

from eclipse_lite.metrics import format_metrics, ground_truth_ranks, retrieval_metrics

KEYS = ["R@1", "R@5", "R@10", "MdR", "MnR"]


def _approx(metrics, expected):
    assert list(metrics) == KEYS
    assert all(type(v) is float for v in metrics.values())
    for key in KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9), key


def test_hand_computed_3x3_and_its_transpose():
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # ground truth 0.9 is the best -> rank 1
            [0.8, 0.5, 0.3],  # 0.8 beats 0.5 -> rank 2
            [0.1, 0.7, 0.6],  # 0.7 beats 0.6 -> rank 2
        ]
    )
    np.testing.assert_array_equal(ground_truth_ranks(sim), [1.0, 2.0, 2.0])
    _approx(retrieval_metrics(sim), {"R@1": 100 / 3, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 5 / 3})
    # columns as queries (V2T): col0 0.9 best -> 1; col1 0.7 beats 0.5 -> 2; col2 0.6 best -> 1
    np.testing.assert_array_equal(ground_truth_ranks(sim.T), [1.0, 2.0, 1.0])
    _approx(retrieval_metrics(sim.T), {"R@1": 200 / 3, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 4 / 3})


def test_ranks_one_to_twelve():
    n = 12
    sim = -np.ones((n, n))
    for i in range(n):
        sim[i, i] = 0.0
        others = [j for j in range(n) if j != i]
        sim[i, others[:i]] = 1.0  # exactly i candidates beat the ground truth -> rank i + 1
    np.testing.assert_array_equal(ground_truth_ranks(sim), np.arange(1, n + 1))
    _approx(
        retrieval_metrics(sim),
        {"R@1": 100 / 12, "R@5": 500 / 12, "R@10": 1000 / 12, "MdR": 6.5, "MnR": 6.5},
    )


@pytest.mark.parametrize("n", [1, 2, 4, 12])
def test_constant_matrix_gives_expected_rank_under_random_ties(n):
    ranks = ground_truth_ranks(np.full((n, n), 0.25))
    np.testing.assert_array_equal(ranks, np.full(n, (n + 1) / 2))
    rank = (n + 1) / 2
    _approx(
        retrieval_metrics(torch.full((n, n), 3.0)),
        {"R@1": 100.0 * (rank <= 1), "R@5": 100.0 * (rank <= 5), "R@10": 100.0 * (rank <= 10), "MdR": rank, "MnR": rank},
    )


def test_half_rank_is_not_a_hit():
    sim = np.array([[1.0, 1.0], [0.0, 1.0]])  # row 0: tied with one other -> 1.5; row 1: 1
    np.testing.assert_array_equal(ground_truth_ranks(sim), [1.5, 1.0])
    _approx(retrieval_metrics(sim), {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.25, "MnR": 1.25})


def test_tie_rule_equals_average_over_all_tie_breaks():
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 3, size=(6, 6)).astype(np.float32)  # many ties
    expected = []
    for i in range(6):
        positions = []
        for order in itertools.permutations(range(6)):  # a random tie-break = a random order
            tiebreak = {j: k for k, j in enumerate(order)}
            ranked = sorted(range(6), key=lambda j: (-sim[i, j], tiebreak[j]))
            positions.append(ranked.index(i) + 1)
        expected.append(np.mean(positions))
    np.testing.assert_allclose(ground_truth_ranks(sim), expected, rtol=0, atol=1e-12)


def test_perfect_and_reversed_retrieval():
    n = 20
    _approx(retrieval_metrics(np.eye(n)), {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0})
    _approx(retrieval_metrics(-np.eye(n)), {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MdR": 20.0, "MnR": 20.0})
    # strictly reversed order: row i ranks candidates by distance, ground truth the worst
    distance = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]).astype(float)
    distance[np.arange(n), np.arange(n)] = -1.0
    np.testing.assert_array_equal(ground_truth_ranks(distance), np.full(n, float(n)))


def test_numpy_and_torch_dtypes_agree():
    rng = np.random.default_rng(1)
    sim = rng.normal(size=(37, 37)).round(1)  # rounding creates ties
    reference = retrieval_metrics(sim)
    assert retrieval_metrics(torch.from_numpy(sim)) == reference
    assert retrieval_metrics(sim.astype(np.float32)) == retrieval_metrics(torch.from_numpy(sim).float())
    bf16 = torch.from_numpy(sim).to(torch.bfloat16)
    assert retrieval_metrics(bf16) == retrieval_metrics(bf16.float().numpy())
    half = sim.astype(np.float16)
    assert retrieval_metrics(half) == retrieval_metrics(torch.from_numpy(half))
    ints = rng.integers(0, 4, size=(9, 9))
    assert retrieval_metrics(ints) == retrieval_metrics(torch.from_numpy(ints)) == retrieval_metrics(ints.astype(float))
    grad = torch.from_numpy(sim).requires_grad_(True)
    assert retrieval_metrics(grad) == reference


def test_non_finite_scores_raise_with_row_count():
    sim = np.eye(4)
    sim[1, 2] = np.nan
    sim[3, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf scores in 2 of 4 rows"):
        retrieval_metrics(sim)
    with pytest.raises(ValueError, match="1 of 3 rows"):
        ground_truth_ranks(torch.tensor([[1.0, 0.0, 0.0], [0.0, -float("inf"), 0.0], [0.0, 0.0, 1.0]]))


def test_bad_shapes_and_types_raise():
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        retrieval_metrics(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        retrieval_metrics(torch.zeros(5))
    with pytest.raises(ValueError, match=r"\(0, 0\)"):
        retrieval_metrics(np.zeros((0, 0)))
    with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
        retrieval_metrics(np.zeros((2, 2, 2)))
    with pytest.raises(TypeError, match="list"):
        retrieval_metrics([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(TypeError, match="complex"):
        retrieval_metrics(torch.eye(2, dtype=torch.complex64))


def test_format_metrics():
    text = format_metrics({"R@1": 41.25, "R@5": 70.0, "R@10": 80.5, "MdR": 2.0, "MnR": 12.34})
    assert text == "R@1 41.2 | R@5 70.0 | R@10 80.5 | MdR 2.0 | MnR 12.3"
    assert format_metrics({"MnR": 3.0, "loss": 0.5, "R@1": 10.0}) == "R@1 10.0 | MnR 3.0 | loss 0.5"
