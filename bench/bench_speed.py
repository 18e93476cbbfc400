"""Speed benchmark: the article's data path and loops against this project's, side by side, in one run.

    python bench/bench_speed.py                 # images/s and ratios (about 6 minutes on 2 CPU cores)
    python bench/bench_speed.py --full_run      # also the whole default `python main.py` (wall time, peak RSS)

Every measurement is the median of --repeats runs over the same number of images. Needs the MNIST
tree (run `python main.py` once, or any run, to prepare Data/MNIST).
"""
import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import article_path  # noqa: E402
import bf_mnist as bfm  # noqa: E402
from attacklab.api import PredictionAPI  # noqa: E402
from attacklab.classifiers import classifier_accuracy, train_classifier_epoch  # noqa: E402
from attacklab.data import load_split, prepare_data, to_unit  # noqa: E402
from attacklab.runtime import select_device  # noqa: E402


def median_rate(fn, n_images, repeats):
    """Median images/s of fn() over repeats runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_images / statistics.median(times)


def take(loader, n_batches):
    """The first n_batches batches of a fresh pass over loader (worker start-up included, as per epoch)."""
    out = []
    for i, batch in enumerate(loader):
        if i == n_batches:
            break
        out.append(batch)
    return out


def bench_target_training(data_dir, n_batches, repeats, device):
    images, labels = load_split(data_dir, "train")
    loader = article_path.image_folder_loader(data_dir / "train")
    model = bfm.TargetModel().to(device)
    adam = torch.optim.Adam(model.parameters())
    article = median_rate(lambda: article_path.train_target_batches(model, adam, take(loader, n_batches), device),
                          n_batches * 200, repeats)
    fused = torch.optim.Adam(model.parameters(), fused=True)
    ours = median_rate(lambda: train_classifier_epoch(model, fused, images, labels, 200, device, n_batches),
                       n_batches * 200, repeats)
    return article, ours


def bench_target_eval(data_dir, repeats, device):
    images, labels = load_split(data_dir, "val")
    loader = article_path.image_folder_loader(data_dir / "val")
    model = bfm.TargetModel().to(device).eval()
    article = median_rate(lambda: article_path.eval_target(model, loader, device), len(images), repeats)
    ours = median_rate(lambda: classifier_accuracy(model, images, labels), len(images), repeats)
    return article, ours


def bench_gan(data_dir, n_batches, repeats, device):
    images, _ = load_split(data_dir, "test")
    loader = article_path.image_folder_loader(data_dir / "test")
    target = bfm.TargetModel().to(device).eval()
    g, d = bfm.Generator().to(device), bfm.Discriminator().to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=4e-4, betas=(0.0, 0.9))
    article = median_rate(lambda: article_path.gan_blog_batches(
        g, d, target, opt_g, opt_d, [x for x, _ in take(loader, n_batches)], device), n_batches * 200, repeats)
    api = PredictionAPI(target)
    aux_labels = api(to_unit(images))  # queried once, as main.py does
    blog_recipe = dict(bfm.default_recipe("blog"), batch_size=200)
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, blog_recipe)
    blog = median_rate(lambda: bfm.gan_epoch_blog(g, d, opt_g, opt_d, images, aux_labels, blog_recipe, device, 100,
                                                  api=api, max_batches=n_batches), n_batches * 200, repeats)
    recipe = bfm.default_recipe()
    opt_g, opt_d = bfm.make_gan_optimizers(g, d, recipe)
    n_corr = max(1, n_batches * 200 // recipe["batch_size"])
    surrogate = bfm.SurrogateClassifier().to(device).eval().requires_grad_(False)  # untrained: the same cost
    corrected = median_rate(lambda: bfm.gan_epoch_corrected(g, d, opt_g, opt_d, images, aux_labels, recipe, device,
                                                            100, surrogate=surrogate, max_batches=n_corr),
                            n_corr * recipe["batch_size"], repeats)
    return article, blog, corrected


def full_run(extra):
    """Wall time and peak RSS of `python main.py` on defaults, in a throwaway run folder."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "main.py"), "--run_dir", str(Path(tmp) / "run"), *extra],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, peak_kib / 1024 ** 2


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=str(REPO / "Data" / "MNIST"), help="MNIST ImageFolder tree")
    p.add_argument("--batches", type=int, default=20, help="batches of 200 images per measurement (default: 20)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per measurement, the median is kept (default: 3)")
    p.add_argument("--full_run", action="store_true", help="also time the whole default python main.py")
    args = p.parse_args()
    data_dir = Path(args.data_dir)
    prepare_data(data_dir)
    device = select_device(1, 0)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.repeats}, {args.batches} batches of 200 per measurement")
    rows = []
    a, o = bench_target_training(data_dir, args.batches, args.repeats, device)
    rows.append(("target training", a, o))
    a, o = bench_target_eval(data_dir, args.repeats, device)
    rows.append(("target evaluation (val split)", a, o))
    gan_batches = max(2, args.batches // 4 * 2)  # even: the article steps D on even iterations
    a, blog, corrected = bench_gan(data_dir, gan_batches, args.repeats, device)
    rows.append(("GAN training, blog variant", a, blog))
    rows.append(("GAN training, corrected variant", a, corrected))
    print(f"{'loop':34s} {'article img/s':>14s} {'ours img/s':>12s} {'ratio':>7s}")
    for name, article, ours in rows:
        print(f"{name:34s} {article:14.1f} {ours:12.1f} {ours / article:6.2f}x")
    if args.full_run:
        wall, peak = full_run([])
        print(f"whole default run (python main.py): {wall / 60:.1f} min wall, peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
