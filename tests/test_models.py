"""The three networks have exactly the article's layers and intermediate shapes (NOTES.md)."""
import torch
import torch.nn as nn

import bf_mnist as bfm


def shapes_through(seq, x):
    """Output shape (without the batch) after each module of a Sequential."""
    out = []
    for layer in seq:
        x = layer(x)
        out.append((type(layer).__name__, tuple(x.shape[1:])))
    return out


def test_target_model_layers_and_shapes():
    model = bfm.TargetModel().eval()
    got = shapes_through(model.main, torch.zeros(2, 1, 28, 28))
    assert got == [("Conv2d", (32, 26, 26)), ("Conv2d", (64, 24, 24)), ("MaxPool2d", (64, 12, 12)),
                   ("Dropout2d", (64, 12, 12)), ("Flatten", (9216,)), ("Linear", (128,)),
                   ("Dropout", (128,)), ("Linear", (10,))]
    # the article's target has no activation function anywhere
    assert not any(isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh)) for m in model.modules())


def test_generator_shapes_and_bias_flags():
    g = bfm.Generator(input_dim=100).eval()
    z, y = torch.randn(3, 100, 1, 1), bfm.one_hot(torch.tensor([0, 4, 9]))
    assert shapes_through(g.block1, z)[-1] == ("ReLU", (32, 4, 4))
    assert shapes_through(g.block2, y) == [("Linear", (1000,)), ("ReLU", (1000,))]
    assert g.concat_block.in_features == 512 + 1000 and g.concat_block.out_features == 512
    got = shapes_through(g.main, torch.zeros(3, 32, 4, 4))
    assert [s for name, s in got if name == "ConvTranspose2d"] == [(128, 7, 7), (64, 14, 14), (1, 28, 28)]
    assert got[-1][0] == "Tanh"
    assert all(m.bias is None for m in g.modules() if isinstance(m, nn.ConvTranspose2d))
    x = g(z, y)
    assert x.shape == (3, 1, 28, 28) and x.min() >= -1 and x.max() <= 1


def test_discriminator_shapes_and_bias_flags():
    d = bfm.Discriminator().eval()
    x, y = torch.randn(3, 1, 28, 28), bfm.one_hot(torch.tensor([1, 2, 3]))
    assert shapes_through(d.block1, x)[0] == ("Conv2d", (32, 14, 14))
    assert isinstance(d.block1[1], nn.LeakyReLU) and d.block1[1].negative_slope == 0.2
    assert d.concat_block.in_features == 6272 + 1000 and d.concat_block.out_features == 6272
    got = shapes_through(d.main, torch.zeros(3, 32, 14, 14))
    assert [s for name, s in got if name == "Conv2d"] == [(64, 7, 7), (128, 3, 3), (1, 1, 1)]
    assert all(m.bias is None for m in d.modules() if isinstance(m, nn.Conv2d))
    assert d(x, y).shape == (3,)
    assert d(x[:1], y[:1]).shape == (1,)  # one logit per sample, also for a batch of one


def test_models_take_their_sizes_as_arguments():
    g = bfm.Generator(input_dim=7, base_channel=8)
    assert g(torch.randn(2, 7, 1, 1), bfm.one_hot(torch.tensor([0, 1]))).shape == (2, 1, 28, 28)
    assert bfm.Discriminator(base_channel=8)(torch.randn(2, 1, 28, 28), bfm.one_hot(torch.tensor([0, 1]))).shape == (2,)
    assert bfm.TargetModel(base_channel=8)(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def close(a, b, rel=1e-5):
    """Equal up to float32 rounding in another summation order: |a - b| <= rel * the largest |b|."""
    return (a - b).abs().max().item() <= rel * b.abs().max().item()


def test_target_forward_is_the_layerwise_function_with_the_same_gradients():
    torch.manual_seed(0)
    model = bfm.TargetModel()
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for train in (False, True):
        model.train(train)
        torch.manual_seed(1)  # the same dropout masks on both sides
        fast = model(x)
        grads_fast = torch.autograd.grad(nn.functional.cross_entropy(fast, y), list(model.parameters()))
        torch.manual_seed(1)
        plain = model.layerwise(x)
        grads_plain = torch.autograd.grad(nn.functional.cross_entropy(plain, y), list(model.parameters()))
        assert close(fast, plain)
        for (name, _), a, b in zip(model.named_parameters(), grads_fast, grads_plain):
            assert close(a, b, rel=1e-4), name


def test_a_wrong_composition_of_the_two_convolutions_is_caught():
    torch.manual_seed(0)
    model = bfm.TargetModel().eval()
    x = torch.rand(8, 1, 28, 28)
    plain = model.layerwise(x)
    conv1, conv2 = model.main[0], model.main[1]
    flipped = nn.functional.conv_transpose2d(conv2.weight, conv1.weight.flip(2, 3))  # the kernel of a wrong fusion
    bias = conv2.bias + conv2.weight.sum((2, 3)) @ conv1.bias
    wrong = model.main[2:](nn.functional.conv2d(x, flipped, bias))
    assert close(model(x), plain) and not close(wrong, plain)
