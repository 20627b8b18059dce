"""The V4 block's math, single process: mHC against a plain per-token loop, the router's rules,
and TP sharding (partials of every rank sum to the unsharded MoE)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepseek_v4 import LayerWeights, hc_post, hc_pre, moe, preset, route, shard_chunks, sinkhorn

CFG = preset("tiny")


def _hc_pre_loop(x, hc_fn, scale, base, eps_rms=1e-6, eps_hc=1e-6, iters=20):
    """hc_pre written out one token and one number at a time."""
    T, hc, H = x.shape
    ys, posts, combs = [], [], []
    for t in range(T):
        flat = [float(v) for v in x[t].float().flatten()]
        r = 1 / math.sqrt(sum(v * v for v in flat) / len(flat) + eps_rms)
        m = [sum(float(hc_fn[k, i]) * flat[i] for i in range(len(flat))) * r for k in range(hc_fn.shape[0])]
        sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
        pre = [sig(m[i] * float(scale[0]) + float(base[i])) + eps_hc for i in range(hc)]
        post = [2 * sig(m[hc + i] * float(scale[1]) + float(base[hc + i])) for i in range(hc)]
        logits = [[m[2 * hc + i * hc + j] * float(scale[2]) + float(base[2 * hc + i * hc + j]) for j in range(hc)]
                  for i in range(hc)]
        c = []
        for row in logits:
            e = [math.exp(v - max(row)) for v in row]
            c.append([v / sum(e) for v in e])
        for _ in range(iters):
            cols = [sum(c[i][j] for i in range(hc)) for j in range(hc)]
            c = [[c[i][j] / cols[j] for j in range(hc)] for i in range(hc)]
            c = [[v / sum(row) for v in row] for row in c]
        ys.append([sum(pre[i] * float(x[t, i, h]) for i in range(hc)) for h in range(H)])
        posts.append(post)
        combs.append(c)
    return torch.tensor(ys), torch.tensor(posts), torch.tensor(combs)


@settings(max_examples=10, deadline=None)
@given(tokens=st.integers(1, 3), seed=st.integers(0, 1000))
def test_hc_pre_matches_a_per_token_loop(tokens, seed):
    w = LayerWeights(CFG, seed, torch.device("cpu"), torch.float32)
    x = w.inputs(tokens)
    y, post, comb = hc_pre(x, *w.hc())
    y_ref, post_ref, comb_ref = _hc_pre_loop(x, *w.hc())
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(post, post_ref.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(comb, comb_ref.float(), rtol=1e-4, atol=1e-5)


def test_comb_is_nearly_doubly_stochastic():
    """Rows end normalised exactly; 20 Sinkhorn rounds bring columns close (not exactly) to 1."""
    comb = sinkhorn(torch.randn(50, 4, 4, generator=torch.Generator().manual_seed(0)), 20)
    torch.testing.assert_close(comb.sum(-1), torch.ones(50, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(comb.sum(-2), torch.ones(50, 4), atol=1e-2, rtol=0)
    assert (comb > 0).all()


@settings(max_examples=10, deadline=None)
@given(tokens=st.integers(1, 3), seed=st.integers(0, 1000))
def test_hc_post_matches_a_per_token_loop(tokens, seed):
    g = torch.Generator().manual_seed(seed)
    hc, H = 4, 8
    f, res = torch.randn(tokens, H, generator=g), torch.randn(tokens, hc, H, generator=g)
    post, comb = torch.rand(tokens, hc, generator=g) * 2, sinkhorn(torch.randn(tokens, hc, hc, generator=g), 20)
    want = torch.zeros(tokens, hc, H)
    for t in range(tokens):
        for j in range(hc):
            want[t, j] = post[t, j] * f[t] + sum(comb[t, i, j] * res[t, i] for i in range(hc))
    torch.testing.assert_close(hc_post(f, res, post, comb), want, rtol=1e-5, atol=1e-5)


def test_router_picks_by_biased_score_and_weights_sum_to_the_scaling_factor():
    w = LayerWeights(CFG, 3, torch.device("cpu"))
    y = torch.randn(7, CFG.hidden).to(torch.bfloat16)
    gate, bias = w.router()
    idx, weights = route(y, gate, bias, CFG)
    scores = torch.sqrt(torch.nn.functional.softplus(y.float() @ gate.T))
    assert idx.shape == (7, CFG.top_k)
    for t in range(7):
        chosen = set(idx[t].tolist())
        worst_chosen = min(float(scores[t, e] + bias[e]) for e in chosen)
        best_other = max(float(scores[t, e] + bias[e]) for e in range(CFG.n_routed_experts) if e not in chosen)
        assert worst_chosen >= best_other
    torch.testing.assert_close(weights.sum(-1), torch.full((7,), CFG.routed_scaling_factor), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights, scores.gather(-1, idx) / scores.gather(-1, idx).sum(-1, keepdim=True) * 1.5)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_tp_partials_sum_to_the_unsharded_moe(world):
    w = LayerWeights(CFG, 5, torch.device("cpu"), torch.float32)
    y = torch.randn(6, CFG.hidden)
    full = moe(y, w, shard_chunks(CFG, 0, 1))
    parts = sum(moe(y, w, shard_chunks(CFG, r, world)) for r in range(world))
    torch.testing.assert_close(parts, full, rtol=1e-4, atol=1e-5)
    owned = sorted(c for r in range(world) for c in shard_chunks(CFG, r, world))
    assert owned == list(range(CFG.moe_intermediate // CFG.shard_chunk))
