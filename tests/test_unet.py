"""The image U-Net: shapes in both modes, torch.func compatibility, sigma conditioning, learning."""

import pytest
import torch
from torch.func import jacrev, jvp

from diffuse_feat.backbones.unet import UNet


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: a second intra-op thread gains nothing, and when another process
    holds a core it makes every op wait (measured 30x slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("shape", "channel_mult"),
    [((1, 8, 8), (1, 2)), ((1, 28, 28), (1, 2)), ((1, 28, 28), (1, 2, 2, 2)), ((3, 32, 32), (1, 2, 2))],
)
def test_output_shapes_in_denoiser_and_classifier_modes(shape, channel_mult):
    torch.manual_seed(0)
    x, sigma = torch.randn(3, *shape), torch.tensor([0.0, 0.5, 5.0])
    denoiser = UNet(shape, shape, base_channels=8, channel_mult=channel_mult)
    classifier = UNet(shape, (10,), base_channels=8, channel_mult=channel_mult)
    assert denoiser(x, sigma).shape == x.shape
    assert classifier(x, sigma).shape == (3, 10)
    assert not hasattr(classifier, "up")  # the classifier builds only encoder + middle
    features = classifier.hidden_features(x, sigma)
    assert len(features) == len(channel_mult) + 1  # one per encoder stage, then the middle
    assert all(f.shape[0] == 3 and torch.isfinite(f).all() for f in features)
    # 28x28 with three downsamplings is padded to 32 inside and cropped back
    assert features[-1].shape[-1] == -(-shape[-1] // 2 ** (len(channel_mult) - 1))


@pytest.mark.parametrize("attention", [False, True])
def test_jacrev_in_eval_mode_matches_finite_differences(attention):
    torch.manual_seed(0)
    model = UNet((1, 8, 8), (1, 8, 8), base_channels=8, attention=attention, dropout=0.1).eval()
    x, sigma = torch.randn(1, 1, 8, 8), torch.tensor([0.7])
    jacobian = jacrev(lambda z: model(z, sigma))(x).reshape(64, 64)  # [output pixel, input pixel]
    pixel, eps = 27, 1e-2
    step = torch.zeros_like(x).flatten()
    step[pixel] = eps
    step = step.reshape(x.shape)
    with torch.no_grad():
        column = (model(x + step, sigma) - model(x - step, sigma)).flatten() / (2 * eps)
    torch.testing.assert_close(jacobian[:, pixel], column, atol=2e-3 * column.abs().max().item(), rtol=1e-2)


def test_jvp_through_padding_matches_finite_differences():
    torch.manual_seed(0)
    model = UNet((1, 28, 28), (1, 28, 28), base_channels=8, channel_mult=(1, 1, 1, 1)).eval()
    x, direction, sigma = torch.randn(1, 1, 28, 28), torch.randn(1, 1, 28, 28), torch.tensor([1.0])
    _, tangent = jvp(lambda z: model(z, sigma), (x,), (direction,))
    eps = 1e-2
    with torch.no_grad():
        diff = (model(x + eps * direction, sigma) - model(x - eps * direction, sigma)) / (2 * eps)
    torch.testing.assert_close(tangent, diff, atol=2e-3 * diff.abs().max().item(), rtol=1e-2)


def test_sigma_conditioning_changes_the_output():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    for out_shape in [(1, 8, 8), (3,)]:
        model = UNet((1, 8, 8), out_shape, base_channels=8).eval()
        low, high = model(x, torch.full((4,), 0.0)), model(x, torch.full((4,), 10.0))
        assert (low - high).abs().mean() > 1e-2 * low.abs().mean()


def test_shape_errors_are_clear():
    model = UNet((1, 8, 8), (1, 8, 8), base_channels=8)
    with pytest.raises(ValueError, match=r"built for inputs \[batch, 1, 8, 8\], got \[2, 1, 9, 9\]"):
        model(torch.randn(2, 1, 9, 9), torch.ones(2))
    with pytest.raises(ValueError, match="too small for 3 downsamplings"):
        UNet((1, 4, 4), (1, 4, 4), channel_mult=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="channels, height, width"):
        UNet((64,), (64,))
    with pytest.raises(ValueError, match="output_shape"):
        UNet((1, 8, 8), (1, 4, 4))
    with pytest.raises(ValueError, match="attention"):
        UNet((1, 8, 8), (1, 8, 8), attention=[16])


def test_adam_reduces_denoising_error_on_random_data():
    torch.manual_seed(0)
    data = torch.randn(32, 1, 8, 8).clamp(-1, 1)
    sigma = torch.full((32,), 0.5)
    noisy = data + sigma[:, None, None, None] * torch.randn_like(data)
    model = UNet((1, 8, 8), (1, 8, 8), base_channels=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return (model(noisy, sigma) - data).square().mean()

    with torch.no_grad():
        before = loss().item()
    for _ in range(40):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = loss().item()
    # better than returning the noisy input (MSE 0.25) and far below the untrained model
    assert after < 0.5 * before and after < 0.25
