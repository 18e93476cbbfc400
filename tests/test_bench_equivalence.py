"""The fast blog-variant loop does the article's arithmetic: same random numbers give bit-identical weights."""
import sys

import torch

import bf_mnist as bfm
from attacklab.api import PredictionAPI
from attacklab.data import batch_indices, to_unit
from conftest import REPO, synthetic_splits

sys.path.insert(0, str(REPO / "bench"))
import article_path  # noqa: E402


def test_blog_loop_matches_the_articles_loop_bit_for_bit():
    images = synthetic_splits((4, 1, 1))["train"][0]  # 40 images -> 4 batches of 10
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    target = bfm.TargetModel(base_channel=8).eval()
    g0, d0 = bfm.Generator(input_dim=8, base_channel=8), bfm.Discriminator(base_channel=8)

    def fresh():
        g, d = bfm.Generator(input_dim=8, base_channel=8), bfm.Discriminator(base_channel=8)
        g.load_state_dict(g0.state_dict())
        d.load_state_dict(d0.state_dict())
        # the article's optimizers, un-fused on both sides: the arithmetic is the same
        return g, d, (torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.9)),
                      torch.optim.Adam(d.parameters(), lr=4e-4, betas=(0.0, 0.9)))

    g_a, d_a, (opt_g, opt_d) = fresh()
    torch.manual_seed(1)
    batches = [to_unit(images[idx]) for idx in batch_indices(len(images), 10, True)]
    article_path.gan_blog_batches(g_a, d_a, target, opt_g, opt_d, batches, cpu, nz=8, warmup=3)

    g_b, d_b, (opt_g, opt_d) = fresh()
    api = PredictionAPI(target)
    labels = api(to_unit(images))
    torch.manual_seed(1)
    # random real targets for iterations 1-2 only: both the random and the constant targets are covered
    recipe = dict(bfm.default_recipe("blog"), batch_size=10, random_real_targets_until=3)
    bfm.gan_epoch_blog(g_b, d_b, opt_g, opt_d, images, labels, recipe, cpu, 8, api=api)

    for (name, a), b in zip(g_a.state_dict().items(), g_b.state_dict().values()):
        assert torch.equal(a, b), f"G {name} differs"  # weights and BatchNorm running statistics
    for (name, a), b in zip(d_a.named_parameters(), d_b.parameters()):
        assert torch.equal(a, b), f"D {name} differs"
    assert not torch.equal(g_a.main[0].weight, g0.main[0].weight)  # it did train
