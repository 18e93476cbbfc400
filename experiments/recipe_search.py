"""Rerun a recipe search (docs/recipe_search.md, docs/disjoint.md) through main.py: one run per row, one table.

    python experiments/recipe_search.py --target runs/base/models/target_best.pt --out runs/recipe_search
    python experiments/recipe_search.py --target ... --rows default no_surrogate   # some rows only
    python experiments/recipe_search.py --protocol disjoint --target runs/disjoint/seed_1/models/target_best.pt \
        --epochs_gan 1 --out runs/disjoint_search

Each row is a set of --recipe overrides of the corrected variant, run for --epochs_gan epochs
against the same saved target (so only the attack differs), judged by the evaluator seed given.
About 85 s per GAN epoch on 2 CPU cores. Finished rows are read, not rerun.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name: (what it tests, --recipe overrides); rows that needed code changes (frozen BatchNorm, D's big
# layer at 1/10 lr, instance noise, a mode-seeking term) are described in the docs, not rerun here.
ROWS = {
    "textbook": ("textbook conditional GAN (BCE, no MMD, no translation)",
                 ["adv_weight=1.0", "mmd_weight=0", "translate=0", "surrogate_weight=0", "lr_g=2e-4", "lr_decay=null"]),
    "translation": ("+ translation by up to 3 px for D (DiffAugment)",
                    ["adv_weight=1.0", "mmd_weight=0", "surrogate_weight=0", "lr_g=2e-4", "lr_decay=null"]),
    "mmd_only": ("class-conditional MMD only (no adversarial term, no linear kernel)",
                 ["adv_weight=0", "mmd_linear=0", "surrogate_weight=0", "lr_decay=null"]),
    "mmd_gan_lr2e-4": ("MMD + 0.1 x GAN loss + translation, G lr 2e-4",
                       ["mmd_linear=0", "surrogate_weight=0", "lr_g=2e-4", "lr_decay=null"]),
    "mmd_gan": ("same with G lr 1e-3", ["mmd_linear=0", "surrogate_weight=0", "lr_decay=null"]),
    "mmd_linear": ("+ linear (mean-image) part in the MMD kernel", ["surrogate_weight=0", "lr_decay=null"]),
    "adv_0.3": ("same with 0.3 x GAN loss", ["adv_weight=0.3", "surrogate_weight=0", "lr_decay=null"]),
    "adv_0.03": ("same with 0.03 x GAN loss", ["adv_weight=0.03", "surrogate_weight=0", "lr_decay=null"]),
    "no_surrogate": ("the default without the surrogate (--surrogate_weight 0)", ["surrogate_weight=0"]),
    "surrogate_no_decay": ("+ 1.0 x surrogate cross-entropy, constant learning rates", ["lr_decay=null"]),
    "default": ("+ learning rates decaying linearly: the default", []),
    "surrogate_0.3": ("same with 0.3 x surrogate", ["surrogate_weight=0.3"]),
}
# The disjoint protocol (docs/disjoint.md): each row gives every entry it changes from the `same` recipe
# (main.py starts from today's disjoint default, so every entry that default changes is set back first);
# the rows before `step_decay` decayed the learning rates per epoch, as `same` does. Rows of entries that have
# left the code (bf_mnist.RETIRED_ENTRIES: running averages, mode seeking, patch and per-class MMD, slots, ...)
# run at commit bf_mnist.RETIRED_AT; docs/dead_ends.md has their results.
_SAME = ['lr_decay="linear"', "surrogate_noise=0", "surrogate_affine=[0, 0]", "surrogate_cutout=0"]
_BLIND = ['fake_labels="uniform"', "d_conditional=false", "mmd_conditional=false"] + _SAME
_NOISE_S5 = _BLIND + ["mmd_weight=2", "surrogate_weight=5", "surrogate_noise=0.3"]
_STEP = _NOISE_S5 + ['lr_decay="linear_step"']
_AFFINE45 = _STEP + ["surrogate_affine=[45, 0.2]"]  # the default before affine45_cutout14_mmd4
DISJOINT_ROWS = {
    "same_recipe": ("the `same` protocol's recipe unchanged (class-conditional D and MMD, surrogate 1)",
                    ['fake_labels="aux"', "d_conditional=true", "mmd_conditional=true", "mmd_weight=10",
                     "surrogate_weight=1"] + _SAME),
    "blind": ("D and MMD judge realism only, G asked for every class equally", _BLIND + ["mmd_weight=10",
                                                                                        "surrogate_weight=1"]),
    "blind_s3": ("same with surrogate weight 3", _BLIND + ["mmd_weight=10", "surrogate_weight=3"]),
    "blind_s10": ("same with surrogate weight 10", _BLIND + ["mmd_weight=10", "surrogate_weight=10"]),
    "blind_s3_mmd2": ("surrogate 3, MMD weight 2 (the default before noise)",
                      _BLIND + ["mmd_weight=2", "surrogate_weight=3"]),
    "blind_s3_mmd0.5": ("surrogate 3, MMD weight 0.5", _BLIND + ["mmd_weight=0.5", "surrogate_weight=3"]),
    "blind_s10_mmd2": ("surrogate 10, MMD weight 2", _BLIND + ["mmd_weight=2", "surrogate_weight=10"]),
    "noise0.3": ("blind_s3_mmd2, the surrogate sees G's images plus Gaussian noise (std 0.3)",
                 _BLIND + ["mmd_weight=2", "surrogate_weight=3", "surrogate_noise=0.3"]),
    "noise0.5": ("noise std 0.5", _BLIND + ["mmd_weight=2", "surrogate_weight=3", "surrogate_noise=0.5"]),
    "noise0.3_s5": ("noise std 0.3, surrogate weight 5 (the default before step_decay)", _NOISE_S5),
    "noise0.3_s5_sur6": ("noise0.3_s5 with the surrogate trained 6 epochs instead of 3",
                         _NOISE_S5 + ["surrogate_epochs=6"]),
    "noise0.5_s10": ("noise std 0.5 and surrogate weight 10",
                     _BLIND + ["mmd_weight=2", "surrogate_weight=10", "surrogate_noise=0.5"]),
    "step_decay": ("noise0.3_s5, learning rates decaying linearly per step, not per epoch (the default before affine45)",
                   _NOISE_S5 + ['lr_decay="linear_step"']),
    "ensemble3": ("step_decay, G must satisfy 3 surrogates (seeds) at once", _STEP + ["surrogate_models=3"]),
    "affine": ("step_decay, the surrogate sees G's images rotated by up to 15 degrees and scaled by up to 10%",
               _STEP + ["surrogate_affine=[15, 0.1]"]),
    "affine30": ("step_decay, rotated by up to 30 degrees and scaled by up to 15%",
                 _STEP + ["surrogate_affine=[30, 0.15]"]),
    "affine45": ("step_decay, rotated by up to 45 degrees and scaled by up to 20% (the default before cutout14_mmd4)",
                 _AFFINE45),
    "affine60": ("step_decay, rotated by up to 60 degrees and scaled by up to 25%",
                 _STEP + ["surrogate_affine=[60, 0.25]"]),
    "affine45_mmd1": ("affine45 with MMD weight 1 (a weaker pull towards the aux images' shapes)",
                      _AFFINE45 + ["mmd_weight=1"]),
    "affine45_ensemble3": ("affine45 and 3 surrogates", _AFFINE45 + ["surrogate_models=3"]),
    "affine45_cutout10": ("affine45, a random 10 x 10 square of what the surrogate sees is hidden",
                          _AFFINE45 + ["surrogate_cutout=10"]),
    "affine45_cutout14": ("affine45, a random 14 x 14 square hidden", _AFFINE45 + ["surrogate_cutout=14"]),
    "affine45_cutout14_mmd4": ("affine45_cutout14 with MMD weight 4 (a stronger pull towards the aux images' loops): "
                               "the default",
                               _AFFINE45 + ["surrogate_cutout=14", "mmd_weight=4"]),
    "affine_ensemble3": ("affine and 3 surrogates", _STEP + ["surrogate_affine=[15, 0.1]", "surrogate_models=3"]),
    "affine_noise0.5": ("affine, noise std 0.5", _STEP + ["surrogate_affine=[15, 0.1]", "surrogate_noise=0.5"]),
}
ROWS_BY_PROTOCOL = {"same": ROWS, "disjoint": DISJOINT_ROWS}


def run_row(name, overrides, args):
    """One main.py run for a row (read if already finished); returns its results.json."""
    run_dir = Path(args.out) / name
    if not (run_dir / "results.json").is_file():
        cmd = [sys.executable, str(REPO / "main.py"), "--training_flag", "false", "--train_model_dir", args.target,
               "--epochs_gan", str(args.epochs_gan), "--evaluator_seed", str(args.evaluator_seed),
               "--seed", str(args.seed), "--run_dir", str(run_dir), "--protocol", args.protocol, "--controls", "none"]
        cmd += (["--recipe", *overrides] if overrides else [])
        if (run_dir / "config.json").is_file():  # interrupted earlier: continue it
            cmd = [sys.executable, str(REPO / "main.py"), "--resume", str(run_dir)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "results.json").read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="a target_best.pt (the same target for every row)")
    p.add_argument("--out", default=str(REPO / "runs" / "recipe_search"), help="folder of the rows' runs")
    p.add_argument("--protocol", choices=list(ROWS_BY_PROTOCOL), default="same", help="whose rows (default: same)")
    p.add_argument("--rows", nargs="+", default=None, help="rows to run (default: all of the protocol's)")
    p.add_argument("--epochs_gan", type=int, default=2, help="GAN epochs per row (default: 2)")
    p.add_argument("--evaluator_seed", type=int, default=0, help="evaluator seed (default: 0)")
    p.add_argument("--seed", type=int, default=1, help="attack seed (default: 1)")
    args = p.parse_args()
    print(f"| recipe | evaluator acc. | target acc. | FID_eval | KNN | D loss, last epoch |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = ROWS_BY_PROTOCOL[args.protocol]
    unknown = [r for r in args.rows or () if r not in rows]
    if unknown:
        p.error(f"unknown rows {unknown}; {args.protocol} has {', '.join(rows)}")
    for name in args.rows or rows:
        what, overrides = rows[name]
        r = run_row(name, overrides, args)
        a = r["attack"]
        print(f"| {what} (`{name}`) | {a['accuracy_by_evaluator']:.3f} | {a['accuracy_by_target']:.3f} | "
              f"{a['fid_evaluator']:.1f} | {a['knn_dist']:.1f} | {r['history'][-1]['loss_d']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
