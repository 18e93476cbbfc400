"""What a person looks at: TensorBoard scalars and images, sample grids, report.png."""
import torch


class Logger:
    """TensorBoard writes held back until the checkpoint they belong to is on disk.

    A resumed run then re-logs exactly the epochs it recomputes: no duplicated or missing points.
    """

    def __init__(self, log_dir):
        from tensorboardX import SummaryWriter
        self.writer = SummaryWriter(str(log_dir))
        self.pending = []

    def scalar(self, tag, value, step):
        self.pending.append(("scalar", tag, value, step))

    def image(self, tag, image, step):
        self.pending.append(("image", tag, image, step))

    def commit(self):
        for kind, tag, value, step in self.pending:
            if kind == "scalar":
                self.writer.add_scalar(tag, value, step)
            else:
                self.writer.add_image(tag, value, step)
        self.pending.clear()
        self.writer.flush()

    def close(self):
        self.writer.close()


def save_grid(images, path, nrow=10):
    """Grid of images in [0, 1] (row r = class r with the default 10 per row); returns the grid tensor."""
    from torchvision.utils import make_grid, save_image
    grid = make_grid(images, nrow=nrow, padding=2)
    save_image(grid, str(path))
    return grid


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_report(history, metrics, grid_images, reference, path, digits=None):
    """report.png: accuracy per GAN epoch, the final grid, per-class accuracy bars (labelled by the real digits)."""
    from torchvision.utils import make_grid
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    n_classes = len(metrics["per_class_accuracy_by_evaluator"])
    digits = list(range(n_classes)) if digits is None else list(digits)
    for key, label in (("accuracy_by_target", "judged by the target"),
                       ("accuracy_by_evaluator", "judged by the evaluator")):
        measured = [h for h in history if key in h]  # epochs the experimenter's monitor measured
        axes[0].plot([h["epoch"] for h in measured], [h[key] for h in measured], marker="o", label=label)
    axes[0].axhline(reference["real_test"]["accuracy_by_evaluator"], ls="--", c="gray", label="real test images")
    axes[0].axhline(1 / n_classes, ls=":", c="gray", label="chance")
    axes[0].set(xlabel="GAN epoch", ylabel="attack accuracy", ylim=(0, 1.02), title="requested class recognised")
    axes[0].legend()
    axes[1].imshow(make_grid(grid_images, nrow=10, padding=2).permute(1, 2, 0).numpy())
    axes[1].set(title=f"final samples (rows: digits {' '.join(map(str, digits))})")
    axes[1].axis("off")
    x = torch.arange(n_classes).float()
    bars = [("target", metrics["per_class_accuracy_by_target"]), ("evaluator", metrics["per_class_accuracy_by_evaluator"])]
    if "judge" in metrics:  # the held-out judge, which never saw the provider's training images
        bars.append(("held-out judge", [metrics["judge"]["per_digit"][str(d)]["accuracy"] for d in digits]))
    width = 0.8 / len(bars)
    for i, (label, values) in enumerate(bars):
        axes[2].bar(x + (i - (len(bars) - 1) / 2) * width, values, width, label=label)
    axes[2].set(xticks=range(n_classes), xticklabels=digits, xlabel="requested digit", ylabel="accuracy", ylim=(0, 1.15),
                title=f"per class (FID_eval {metrics['fid_evaluator']:.1f}, KNN {metrics['knn_dist']:.1f})")
    axes[2].legend(loc="upper center", ncol=3)  # above the bars, which are near 1 when the attack works
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def fgsm_figures(eps, accuracy, clean, adv, clean_pred, adv_pred, shown_eps, out_dir):
    """fgsm_accuracy.png (accuracy against eps, one curve per setting) and fgsm_examples.png (clean vs adversarial)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    labels = {"white_box": "white box (target's gradients)", "transfer_to_evaluator": "same images, evaluator",
              "black_box_via_surrogate": "black box (surrogate's gradients, sent to the API)",
              "targeted_success": "targeted: success rate"}
    for key, values in accuracy.items():
        ax.plot(eps, values, marker="o", label=labels.get(key, key))
    ax.set(xlabel="eps (L-inf step)", ylabel="accuracy on the test split", ylim=(0, 1.02), title="FGSM")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "fgsm_accuracy.png", dpi=80)
    plt.close(fig)
    fig, axes = plt.subplots(2, len(clean), figsize=(1.3 * len(clean), 3.2))
    for i in range(len(clean)):
        for row, (img, pred) in enumerate(((clean, clean_pred), (adv, adv_pred))):
            axes[row, i].imshow(img[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, i].set_title(f"{'clean' if row == 0 else 'adv'}: {int(pred[i])}", fontsize=8)
            axes[row, i].axis("off")
    fig.suptitle(f"the target's answers, clean and FGSM eps {shown_eps:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "fgsm_examples.png", dpi=80)
    plt.close(fig)


def extraction_figure(rounded, out_dir):
    """extraction_rounding.png: agreement with the API against the decimals it rounds to, per query design and budget."""
    from attacklab.extraction import by_design_and_budget
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(rounded), figsize=(6 * len(rounded), 4.5), squeeze=False)
    for ax, (model, rows) in zip(axes[0], rounded.items()):
        for (design, budget), cells in by_design_and_budget(rows).items():
            ax.plot(list(cells), [r["agreement"] for r in cells.values()], marker="o",
                    label=f"{design}, {budget}(d + 1) queries")
        ax.set(xlabel="decimals the API rounds to", ylabel="agreement with the API (its test images)", ylim=(0, 1.02),
               title=f"equation solving against rounded probabilities: {model}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "extraction_rounding.png", dpi=80)
    plt.close(fig)
