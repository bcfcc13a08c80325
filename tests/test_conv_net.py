"""The plain convolutional classifier: block resolutions, sigma conditioning, learning, and what the
forward-backward read-out sees of it."""

import pytest
import torch

from diffuse_feat.backbones.conv_net import ConvNet
from diffuse_feat.diagnostics.hierarchy import classifier_read_out
from diffuse_feat.modules.classification import ClassificationModule


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_blocks_go_from_full_resolution_to_downsampled_and_the_head_gives_logits():
    torch.manual_seed(0)
    net = ConvNet((1, 8, 8), (10,), channels=(8, 8, 16, 16))
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.0, 0.5, 2.0])
    features = net.hidden_features(x, sigma)
    assert [tuple(f.shape) for f in features] == [(3, 8, 8, 8), (3, 8, 8, 8), (3, 16, 4, 4), (3, 16, 2, 2)]
    logits = net(x, sigma)
    assert logits.shape == (3, 10)
    # the head is a linear map of the last block averaged over space
    torch.testing.assert_close(logits, net.head(features[-1].mean(dim=(2, 3))))


def test_sigma_conditioning_changes_the_output():
    torch.manual_seed(0)
    net = ConvNet((1, 8, 8), (3,), channels=(8, 8), downsample=(False, True))
    x = torch.randn(4, 1, 8, 8)
    low, high = net(x, torch.zeros(4)), net(x, torch.full((4,), 10.0))
    assert (low - high).abs().mean() > 1e-2 * low.abs().mean()


def test_bad_shapes_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="output_shape"):
        ConvNet((1, 8, 8), (1, 8, 8))
    with pytest.raises(ValueError, match="one downsample flag per block"):
        ConvNet((1, 8, 8), (10,), channels=(8, 8), downsample=(False,))
    with pytest.raises(ValueError, match="too small for 4 downsamplings"):
        ConvNet((1, 8, 8), (10,), channels=(4, 4, 4, 4), downsample=(True, True, True, True))


def test_adam_fits_random_labels_of_a_small_batch():
    torch.manual_seed(0)
    x, labels, sigma = torch.randn(32, 1, 8, 8), torch.randint(0, 4, (32,)), torch.zeros(32)
    net = ConvNet((1, 8, 8), (4,), channels=(16, 16, 32, 32))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x, sigma), labels).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (net(x, sigma).argmax(1) == labels).double().mean()
    assert accuracy > 0.9  # chance is 0.25


def test_the_read_out_gives_every_block_and_the_classifier_logits():
    torch.manual_seed(0)
    classifier = ClassificationModule(ConvNet, data_shape=(1, 8, 8), num_classes=10).eval()
    x = torch.randn(5, 1, 8, 8)
    logits, acts = classifier_read_out(classifier)(x)
    torch.testing.assert_close(logits, classifier(x, 0.0))
    assert len(acts) == len(classifier.backbone.convs) == 4
    torch.testing.assert_close(acts[-1], classifier.backbone.hidden_features(x, torch.zeros(5))[-1])
