"""Symmetric InfoNCE: value by hand, gradients, limits and refusals."""
import math

import pytest
import torch
import torch.nn.functional as F

from eclipse_lite.losses import infonce_from_logits, symmetric_infonce


def _unit(rows, dim, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=-1)


def _by_hand(text, video, scale):
    """Plain-python log-softmax cross-entropies in both directions, averaged."""
    b = len(text)
    sim = [[scale * sum(float(x) * float(y) for x, y in zip(text[i], video[j])) for j in range(b)] for i in range(b)]
    t2v = -sum(sim[i][i] - math.log(sum(math.exp(sim[i][j]) for j in range(b))) for i in range(b)) / b
    v2t = -sum(sim[j][j] - math.log(sum(math.exp(sim[i][j]) for i in range(b))) for j in range(b)) / b
    return (t2v + v2t) / 2


def test_matches_hand_computation():
    text, video = _unit(5, 8, seed=0), _unit(5, 8, seed=1)
    loss = symmetric_infonce(text, video, 7.5)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_by_hand(text.tolist(), video.tolist(), 7.5), rel=1e-6)
    # the brief's literal form: (CE(s t v^T) + CE(s v t^T)) / 2
    target = torch.arange(5)
    literal = (F.cross_entropy(7.5 * text @ video.T, target) + F.cross_entropy(7.5 * video @ text.T, target)) / 2
    assert loss.item() == pytest.approx(literal.item(), rel=1e-6)


def test_asymmetric_directions_both_count():
    # text 0 is close to both videos, so only the text->video direction is ambiguous for row 0
    text = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=-1)
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = symmetric_infonce(text, video, 3.0)
    assert loss.item() == pytest.approx(_by_hand(text.tolist(), video.tolist(), 3.0), rel=1e-6)
    logits = 3.0 * text @ video.T
    t2v = F.cross_entropy(logits, torch.arange(2)).item()
    v2t = F.cross_entropy(logits.T, torch.arange(2)).item()
    assert t2v != pytest.approx(v2t)  # the two directions differ, the loss is their mean
    assert loss.item() == pytest.approx((t2v + v2t) / 2, rel=1e-6)


def test_gradients_reach_embeddings_and_scale():
    text = _unit(4, 6, seed=2).float().requires_grad_(True)
    video = _unit(4, 6, seed=3).float().requires_grad_(True)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    symmetric_infonce(text, video, log_scale.exp()).backward()
    for grad in (text.grad, video.grad, log_scale.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_aligned_pairs_with_large_scale_give_zero_loss():
    eye = torch.eye(6, 16)
    assert symmetric_infonce(eye, eye.clone(), 100.0).item() < 1e-12
    shuffled = eye[torch.tensor([1, 0, 2, 3, 4, 5])]
    assert symmetric_infonce(eye, shuffled, 100.0).item() > 10.0  # two wrong pairs cost ~100/3


def test_batch_of_one_is_zero():
    text = _unit(1, 4, seed=4).float().requires_grad_(True)
    loss = symmetric_infonce(text, _unit(1, 4, seed=5).float(), torch.tensor([50.0]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(text.grad, torch.zeros_like(text))


def test_from_logits_matches_and_computes_in_float32():
    text, video = _unit(3, 5, seed=6).float(), _unit(3, 5, seed=7).float()
    logits = 20.0 * text @ video.T
    assert torch.allclose(infonce_from_logits(logits), symmetric_infonce(text, video, 20.0))
    low = infonce_from_logits(logits.to(torch.bfloat16))
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(infonce_from_logits(logits.to(torch.bfloat16).float()).item(), rel=1e-6)


def test_refuses_bad_inputs():
    a = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"\(3, 4\) and video_emb \(2, 4\)"):
        symmetric_infonce(a, torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match=r"video_emb must be \[B, D\], got shape \(4,\)"):
        symmetric_infonce(a, torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match=r"one value, got shape \(2,\)"):
        symmetric_infonce(a, a, torch.ones(2))
    with pytest.raises(ValueError, match="positive finite"):
        symmetric_infonce(a, a, -1.0)
    with pytest.raises(ValueError, match="positive finite"):
        symmetric_infonce(a, a, float("nan"))
    with pytest.raises(TypeError, match="logit_scale"):
        symmetric_infonce(a, a, "100")
    with pytest.raises(ValueError, match=r"square .* \(3, 4\)"):
        infonce_from_logits(a)
    with pytest.raises(ValueError, match=r"\(0, 0\)"):
        infonce_from_logits(torch.zeros(0, 0))
    with pytest.raises(TypeError, match="floating"):
        infonce_from_logits(torch.zeros(2, 2, dtype=torch.long))
    bad = torch.zeros(4, 4)
    bad[1, 3] = float("nan")
    bad[2, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf values in 2 of 4 rows"):
        infonce_from_logits(bad)
    text = torch.zeros(3, 2)
    text[1, 0] = float("nan")  # a broken text row poisons only its own row of logits
    with pytest.raises(ValueError, match="1 of 3 rows"):
        symmetric_infonce(text, torch.zeros(3, 2), 1.0)
