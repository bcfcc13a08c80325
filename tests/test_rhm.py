"""Random Hierarchy Model: grammar, parser, exact BP (against brute-force enumeration) and mean-field theory."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffuse_feat.data.rhm import RHMDataModule, RHMGrammar
from diffuse_feat.denoisers.rhm_bp import (
    RHMBeliefPropagation,
    noisy_leaf_evidence,
    sigma_of_gaussian_eps,
    soft_evidence,
)
from diffuse_feat.diagnostics.hierarchy import (
    bp_forward_backward,
    bp_gaussian_forward_backward,
    channel_stats,
    image_forward_backward,
    large_v_threshold,
    learned_forward_backward,
    mean_field_threshold,
    normalized_change,
)
from diffuse_feat.errors import ConfigError
from diffuse_feat.samplers import SeededNoise, forward_backward

# tiny grammars small enough to enumerate every derivation: (v, n_c, m, s, L)
TINY = [(4, 3, 2, 2, 2), (4, 3, 2, 2, 3), (3, 2, 2, 3, 2)]


def all_derivations(grammar: RHMGrammar) -> list[list[torch.Tensor]]:
    """Every derivation (class and rule choice of every internal node), as trees ``[P, s^l]`` per level."""
    internal = [grammar.s**level for level in range(grammar.L)]
    choices = list(itertools.product(range(grammar.m), repeat=sum(internal)))
    classes = torch.arange(grammar.num_classes).repeat_interleave(len(choices))
    picks = torch.tensor(choices, dtype=torch.long).repeat(grammar.num_classes, 1)  # [P, internal nodes]
    trees, offset = [classes.reshape(-1, 1)], 0
    for level, count in enumerate(internal):
        j = picks[:, offset : offset + count]
        trees.append(grammar.rules[level][trees[level], j].reshape(len(classes), -1))
        offset += count
    return trees


def brute_force_marginals(grammar: RHMGrammar, evidence: torch.Tensor) -> list[torch.Tensor]:
    """``P(node = a | evidence)`` for one input's leaf likelihoods ``[s^L, v]`` by summing over all derivations."""
    trees = all_derivations(grammar)
    leaves = trees[-1]
    weight = evidence[torch.arange(leaves.shape[1]), leaves].prod(1)  # uniform prior over derivations
    weight = weight / weight.sum()
    out = []
    for level, t in enumerate(trees):
        vocab = grammar.num_classes if level == 0 else grammar.v
        onehot = torch.nn.functional.one_hot(t, vocab).double()  # [P, s^l, V]
        out.append((weight[:, None, None] * onehot).sum(0))
    return out


# ----- grammar and parser ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("v,n_c,m,s,L", [(8, 8, 4, 2, 3), (32, 32, 8, 2, 4), (4, 3, 2, 3, 2), (16, 4, 16, 2, 2)])
def test_rules_share_no_tuple_within_a_level(v, n_c, m, s, L):
    grammar = RHMGrammar.random(v, n_c, m, s, L, seed=3)
    assert [tuple(r.shape) for r in grammar.rules] == [(n_c, m, s)] + [(v, m, s)] * (L - 1)
    for r in grammar.rules:
        assert int(r.min()) >= 0 and int(r.max()) < v
        tuples = {tuple(t) for t in r.reshape(-1, s).tolist()}
        assert len(tuples) == r.shape[0] * m  # all distinct: no tuple belongs to two symbols (or twice to one)
    again = RHMGrammar.random(v, n_c, m, s, L, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(grammar.rules, again.rules, strict=True))
    other = RHMGrammar.random(v, n_c, m, s, L, seed=4)
    assert not all(torch.equal(a, b) for a, b in zip(grammar.rules, other.rules, strict=True))


def test_shared_tuple_is_rejected_and_infeasible_m_is_a_config_error():
    rules = [torch.tensor([[[0, 1]], [[0, 1]]])]  # two classes own the same tuple
    with pytest.raises(ValueError, match="share a tuple"):
        RHMGrammar(rules, v=2)
    with pytest.raises(ConfigError, match="data.m"):
        RHMDataModule(v=4, n_c=4, m=5, s=2, L=2)


def test_parser_inverts_generation():
    grammar = RHMGrammar.random(8, 5, 4, 2, 4, seed=1)
    trees = grammar.sample_trees(500, torch.Generator().manual_seed(0))
    parsed = grammar.parse(trees[-1])
    for a, b in zip(parsed, trees, strict=True):
        assert torch.equal(a, b)
    # random strings are almost never grammatical (valid fraction n_c m^15 / 8^16 ~ 2e-5): the parse says so
    noise = torch.randint(8, (500, 16), generator=torch.Generator().manual_seed(1))
    assert (grammar.parse(noise)[0] == -1).float().mean() > 0.99
    # one changed leaf breaks its tuple unless the new tuple happens to be a rule of the same level
    broken = trees[-1].clone()
    broken[:, 0] = (broken[:, 0] + 1) % 8
    root = grammar.parse(broken)[0][:, 0]
    assert (root == -1).float().mean() > 0.5


def test_datamodule_encoding_trees_and_labels(tmp_path):
    dm = RHMDataModule(v=8, n_c=4, m=2, s=2, L=3, pool_size=600, n_val=100, batch_size=32)
    x, y = dm.train_tensor(), dm.train_labels()
    assert tuple(x.shape[1:]) == (8, 8) and x.dtype == torch.float32
    assert torch.allclose(x.sum(1), torch.zeros(()), atol=1e-6)  # centred one-hot: each position sums to 0
    assert abs(float(x.std()) - dm.data_std) < 0.02
    trees = dm.train_trees()
    assert torch.equal(trees[0][:, 0], y)
    assert torch.equal(dm.oracle_labels(x), y)
    assert torch.equal(dm.parse(x)[-1], dm.symbols(x))
    assert dm.eps_star() == mean_field_threshold(8, 2, 2)


# ----- belief propagation against enumeration ----------------------------------------------------------------------
@pytest.mark.parametrize("v,n_c,m,s,L", TINY)
def test_bp_marginals_equal_brute_force_enumeration(v, n_c, m, s, L):
    grammar = RHMGrammar.random(v, n_c, m, s, L, seed=2)
    bp = RHMBeliefPropagation(grammar.rules, v)
    g = torch.Generator().manual_seed(0)
    # arbitrary positive leaf likelihoods, plus soft evidence around a valid datum (a sharply peaked case)
    evidence = torch.rand(4, s**L, v, generator=g, dtype=torch.float64) + 0.05
    datum = grammar.sample_trees(2, g)[-1]
    evidence = torch.cat([evidence, soft_evidence(datum, 0.3, v)])
    result = bp.run(evidence, marginals=True)
    for b in range(evidence.shape[0]):
        exact = brute_force_marginals(grammar, evidence[b])
        assert torch.allclose(result.root[b], exact[0][0], atol=1e-10, rtol=0)
        for level in range(L + 1):
            assert torch.allclose(result.marginals[level][b], exact[level], atol=1e-10, rtol=0), level


def test_posterior_samples_match_marginals_and_are_grammatical():
    grammar = RHMGrammar.random(4, 3, 2, 2, 2, seed=2)
    bp = RHMBeliefPropagation(grammar.rules, 4)
    evidence = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + 0.05
    exact = brute_force_marginals(grammar, evidence[0])
    n = 20000
    samples = bp.run(evidence.expand(n, -1, -1), sample=True, generator=torch.Generator().manual_seed(1)).sample
    # every sample is a derivation of the grammar (top-down rule sampling, not node-wise marginals)
    for a, b in zip(grammar.parse(samples[-1]), samples, strict=True):
        assert torch.equal(a, b)
    for level, t in enumerate(samples):
        freq = torch.nn.functional.one_hot(t, exact[level].shape[-1]).double().mean(0)
        assert (freq - exact[level]).abs().max() < 0.015, level  # ~4 standard errors at n = 20000


def test_samples_and_marginals_do_not_depend_on_chunking():
    grammar = RHMGrammar.random(8, 8, 4, 2, 4, seed=0)
    trees = grammar.sample_trees(37, torch.Generator().manual_seed(0))
    evidence = soft_evidence(trees[-1], 0.6, 8)
    whole = RHMBeliefPropagation(grammar.rules, 8).run(
        evidence, marginals=True, sample=True, generator=torch.Generator().manual_seed(3))
    small = RHMBeliefPropagation(grammar.rules, 8, max_chunk_bytes=1).run(  # one tree per chunk
        evidence, marginals=True, sample=True, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(whole.root, small.root, atol=1e-12)
    for a, b in zip(whole.marginals, small.marginals, strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    for a, b in zip(whole.sample, small.sample, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("process", ["soft", "d3pm", "masking", "gaussian"])
def test_zero_noise_reconstructs_every_level(process):
    grammar = RHMGrammar.random(16, 8, 4, 2, 5, seed=0)
    bp = RHMBeliefPropagation(grammar.rules, 16)
    trees = grammar.sample_trees(64, torch.Generator().manual_seed(0))
    evidence = noisy_leaf_evidence(process, trees[-1], 0.0, 16, generator=torch.Generator().manual_seed(1))
    result = bp.run(evidence, marginals=True, sample=True, generator=torch.Generator().manual_seed(2))
    for level, t in enumerate(trees):
        assert torch.equal(result.sample[level], t), level
        true_mass = result.marginals[level].gather(-1, t.unsqueeze(-1))
        assert torch.allclose(true_mass, torch.ones((), dtype=torch.float64), atol=1e-12)


def test_gaussian_denoiser_zero_sigma_returns_the_datum():
    dm = RHMDataModule(v=8, n_c=4, m=2, s=2, L=3, scale=2.0, pool_size=50, n_val=10)
    x0 = dm.train_tensor()[:16].double()
    bp = dm.bp_denoiser()
    assert torch.allclose(bp(x0, 0.0), x0, atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(bp.posterior_sample(x0, 0.0), dm.parse(x0), strict=True))


@pytest.mark.parametrize("scale,center", [(1.0, True), (2.5, False)])
def test_bp_gaussian_denoiser_equals_brute_force_posterior_mean(scale, center):
    grammar = RHMGrammar.random(4, 3, 2, 2, 2, seed=2)
    bp = RHMBeliefPropagation(grammar.rules, 4, scale=scale, center=center)
    data = all_derivations(grammar)[-1]  # every datum, each derivation equally likely (distinct strings)
    assert data.unique(dim=0).shape[0] == data.shape[0]
    encoded = bp.encode(torch.nn.functional.one_hot(data, 4).double()).reshape(data.shape[0], -1)  # [P, v d]
    g = torch.Generator().manual_seed(0)
    x0 = encoded[torch.randint(len(encoded), (6,), generator=g)]
    sigma = torch.tensor([0.3, 0.7, 1.0, 1.5, 3.0, 10.0], dtype=torch.float64) * scale
    x = x0 + sigma[:, None] * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    logw = -(x[:, None, :] - encoded[None]).square().sum(-1) / (2 * sigma[:, None] ** 2)
    exact = torch.softmax(logw, dim=1) @ encoded
    got = bp(x.reshape(6, 4, 4), sigma).reshape(6, -1)
    assert torch.allclose(got, exact, atol=1e-10, rtol=0)


def test_gaussian_eps_process_matches_sigma_space_evidence():
    """``x_t = sqrt(1-eps) e + sqrt(eps) z`` and ``x = e + sigma z`` with ``sigma = sqrt(eps/(1-eps))`` carry the same
    leaf likelihood for the same ``z``."""
    grammar = RHMGrammar.random(8, 8, 2, 2, 3, seed=0)
    bp = RHMBeliefPropagation(grammar.rules, 8, center=False)
    symbols = grammar.sample_trees(5, torch.Generator().manual_seed(0))[-1]
    eps = 0.3
    via_eps = noisy_leaf_evidence("gaussian", symbols, eps, 8, generator=torch.Generator().manual_seed(7))
    z = torch.randn((5, 8, 8), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    sigma = float(sigma_of_gaussian_eps(eps))
    x = bp.encode(torch.nn.functional.one_hot(symbols, 8).double()) + sigma * z.transpose(1, 2)
    assert torch.allclose(bp.leaf_evidence_from_x(x, sigma), via_eps, atol=1e-12)


# ----- forward-backward and the phase transition -------------------------------------------------------------------
def test_class_preservation_falls_to_chance_across_eps_star_at_depth_8():
    v, m, s, L = 32, 8, 2, 8
    eps_star = mean_field_threshold(v, m, s)["eps_star"]
    grammar = RHMGrammar.random(v, v, m, s, L, seed=0)
    bp = RHMBeliefPropagation(grammar.rules, v)
    trees = grammar.sample_trees(150, torch.Generator().manual_seed(0))
    eps = [0.6, eps_star, 0.85]
    out = bp_forward_backward(bp, trees, eps, seed=0)
    p = out["p_class"]
    assert p[0] > 0.9  # note table: 0.979
    assert 0.2 < p[1] < 0.5  # crossing height ~ x* = 0.29 .. 0.36 at finite L
    assert abs(p[2] - 1 / v) < 0.02  # chance
    leaves = [row[-1] for row in out["p_unchanged"]]
    assert leaves[2] > 0.25  # low-level features survive where the class is lost (note: 0.44 at eps = 0.8)
    assert abs(out["p_class_sampled"][0] - p[0]) < 0.05


def test_learned_forward_backward_with_bp_as_the_denoiser():
    """Any denoiser plugs in; the BP denoiser at a tiny sigma gives back the datum, parsed at every level."""
    dm = RHMDataModule(v=8, n_c=4, m=2, s=2, L=3, pool_size=60, n_val=10)
    x0, trees = dm.train_tensor()[:20], [t[:20] for t in dm.train_trees()]
    bp = dm.bp_denoiser()
    out = learned_forward_backward(bp, x0, trees, [1e-3, 50.0], dm.parse, seeds=range(20), num_steps=8)
    assert out["p_class"][0] == 1.0 and out["p_unchanged"][0] == [1.0] * 4 and out["p_valid"][0] == 1.0
    assert out["p_class"][1] < 0.8
    exact = bp_gaussian_forward_backward(bp, x0, trees, [1e-3], torch.randn_like(x0))
    assert exact["p_class"][0] == pytest.approx(1.0, abs=1e-9)


# ----- mean-field theory -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "v,m,s,eps_star,x_star,lam",
    [(32, 8, 2, 0.731, 0.292, 1.44), (16, 4, 2, 0.800, 0.250, 1.36), (64, 16, 2, 0.698, 0.312, 1.47),
     (32, 12, 2, 0.465, 0.550, 1.26), (8, 8, 3, 0.739, 0.354, 1.57)],
)
def test_mean_field_threshold_matches_the_table(v, m, s, eps_star, x_star, lam):
    t = mean_field_threshold(v, m, s)
    assert t["eps_star"] == pytest.approx(eps_star, abs=1e-3)
    assert t["x_star"] == pytest.approx(x_star, abs=1e-3)
    assert t["lam"] == pytest.approx(lam, abs=0.01)


def test_large_v_threshold_and_no_reconstructible_phase():
    assert large_v_threshold(32, 8, 2) == pytest.approx((1 - 0.5) / (1 - 0.25), abs=1e-12)
    assert mean_field_threshold(4096, 1024, 2)["eps_star"] == pytest.approx(2 / 3, abs=2e-3)  # finite v -> large v
    assert math.isnan(mean_field_threshold(32, 20, 2)["eps_star"])  # s f = 1.25: no reconstructible phase
    assert math.isnan(large_v_threshold(16, 8, 2))


def test_normalized_change():
    a = torch.randn(4, 3, 5, 5)
    assert torch.allclose(normalized_change(a, a), torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(normalized_change(a, -a), torch.full((4,), 4.0, dtype=torch.float64))


def test_image_forward_backward_reports_the_change_of_the_probes_that_kept_their_class_apart():
    torch.manual_seed(0)
    x0 = torch.randn(64, 1, 4, 4) + 0.3

    def read_out(x):  # class: the sign of the mean pixel; one hidden depth
        mean = x.flatten(1).mean(1)
        return torch.stack([mean, -mean], 1), [2 * x + 1]

    def denoiser(x, sigma):
        return 0.5 * x

    sigmas = [0.3, 1.0]
    res = image_forward_backward(denoiser, x0, sigmas, read_out, seeds=range(64), num_steps=4, depth_names=["h"])
    before = 2 * x0 + 1
    for i, sigma in enumerate(sigmas):
        x_hat = forward_backward(denoiser, x0, sigma, num_steps=4, sampler="stochastic", noise=SeededNoise(range(64)))
        kept = (x_hat.flatten(1).mean(1) > 0) == (x0.flatten(1).mean(1) > 0)
        assert 0 < int(kept.sum()) < 64  # both kinds of probe are there
        change = normalized_change(before, 2 * x_hat + 1, *channel_stats(before))
        assert res["p_class"][i] == pytest.approx(float(kept.double().mean()))
        assert res["change"]["h"][i] == pytest.approx(float(change.mean()))
        assert res["change_class_kept"]["h"][i] == pytest.approx(float(change[kept].mean()))
