import pytest
import torch

from diffuse_feat.data import (
    DigitsDataModule,
    EpochSeededSampler,
    GaussianMixtureDataModule,
    LowRankGaussianDataModule,
)


def test_digits_shape_range_split_and_seeded_subset():
    dm = DigitsDataModule(n_val=297, seed=0)
    assert dm.data_shape == (1, 8, 8) and dm.num_classes == 10  # known before setup (linked into the model)
    dm.setup()
    x = dm.train_tensor()
    assert x.shape == (1500, 1, 8, 8) and dm.val_tensor().shape[0] == 297
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1 and x.max() == 1
    sub = DigitsDataModule(n_train=40, seed=0)
    sub.setup()
    again = DigitsDataModule(n_train=40, seed=0)
    again.setup()
    assert torch.equal(sub.train_tensor(), again.train_tensor())
    # the n_train subset is a prefix of the same seeded permutation: nested sizes are nested sets
    assert torch.equal(sub.train_tensor(), x[:40])
    other = DigitsDataModule(n_train=40, seed=1)
    other.setup()
    assert not torch.equal(sub.train_tensor(), other.train_tensor())


def test_digits_class_subset_is_relabelled():
    dm = DigitsDataModule(classes=[7, 1], n_val=0)
    dm.setup()
    assert dm.num_classes == 2 and set(dm.train_labels().tolist()) == {0, 1}
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert dm.train_tensor().shape[0] == int(((raw.target == 7) | (raw.target == 1)).sum())
    sevens = torch.as_tensor(raw.images[raw.target == 7], dtype=torch.float32) / 8 - 1
    assert torch.allclose(dm.train_tensor()[dm.train_labels() == 0].mean(0)[0], sevens.mean(0))  # 7 -> label 0


def test_moments_and_gaussian_denoiser_are_the_training_sets():
    dm = DigitsDataModule(n_train=100)
    flat = dm.train_tensor().reshape(100, -1).double()
    assert torch.allclose(dm.mean(), flat.mean(0))
    lam, u = dm.covariance_eigh()
    assert torch.allclose((u * lam) @ u.T, torch.cov(flat.T, correction=0), atol=1e-10)
    assert bool((lam[:-1] >= lam[1:]).all())
    den = dm.gaussian_denoiser()
    assert torch.allclose(den(dm.train_tensor()[:3], 1e3), dm.mean().float().reshape(1, 1, 8, 8).expand(3, -1, -1, -1),
                          atol=1e-3)


def test_mixture_population_denoiser_and_oracle_labels():
    dm = GaussianMixtureDataModule(dim=16, mean_scale=1.0, component_std=1.0, pool_size=4000, n_val=0)
    dm.setup()
    x, y = dm.train_tensor(), dm.train_labels()
    # the generating component is what the oracle reads at sigma = 0 (error rate Phi(-sqrt(d)) ~ 3e-5)
    assert (dm.oracle_labels(x) == y).float().mean() > 0.999
    assert dm.top_eigenvalue == pytest.approx(17.0)
    lam = torch.linalg.eigvalsh(torch.cov(x.T.double(), correction=0))
    assert lam.max().item() == pytest.approx(17.0, rel=0.1)


def test_low_rank_gaussian_covariance_and_population_denoiser():
    dm = LowRankGaussianDataModule(dim=12, rank=3, top_eigenvalue=2.0, decay=0.5, mean_offset=0.3, pool_size=20000)
    dm.setup()
    cov = dm.covariance()
    assert torch.allclose(cov, dm.population_covariance(), atol=0.06)
    lam = torch.linalg.eigvalsh(dm.population_covariance()).flip(0)
    assert torch.allclose(lam[:3], torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64), atol=1e-10)
    pop = dm.population_denoiser()
    # the exact Wiener filter projects onto the data subspace at sigma -> 0
    x = torch.randn(5, 12)
    out = pop(x, 1e-4).double()
    proj = dm.population_mean + (x.double() - dm.population_mean) @ dm.basis @ dm.basis.T
    assert torch.allclose(out, proj, atol=1e-4)


def test_epoch_seeded_sampler_depends_only_on_seed_and_epoch():
    a, b = EpochSeededSampler(10, seed=3), EpochSeededSampler(10, seed=3)
    a.set_epoch(2)
    first = list(a)
    b.set_epoch(0)
    list(b)
    b.set_epoch(2)
    assert list(b) == first and sorted(first) == list(range(10))


@pytest.mark.parametrize("kwargs,match", [({"n_train": 0}, "data.n_train"), ({"batch_size": 0}, "data.batch_size"),
                                          ({"classes": [1, 1]}, "data.classes")])
def test_bad_data_arguments_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)
