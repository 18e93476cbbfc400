"""MI-FACE's loop in two checkouts, side by side in one run: seconds per inversion and the images' identity.

    git worktree add /tmp/before ab163d5~1
    python bench/mi_face_speed.py /tmp/before . --target runs/same/seed_1/models/target_best.pt

Each checkout inverts every class of the target with each rule (MI_FACE_SETTINGS), alternately, --repeats
times, in a subprocess of its own (its own attacklab); prints each time, the median ratio and whether the
two checkouts' images are identical.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ONE = """
import sys, time, torch
sys.path.insert(0, sys.argv[1])
from attacklab import controls, provider
target, _ = provider.load_target(sys.argv[2], torch.device("cpu"), "the target", int(sys.argv[3]))
out, seconds = {}, {}
for name, settings in controls.MI_FACE_SETTINGS.items():
    t0 = time.time()
    out[name] = controls.mi_face(target, torch.arange(int(sys.argv[3])), **settings)
    seconds[name] = time.time() - t0
torch.save(out, sys.argv[4])
print(" ".join(f"{k}={v:.3f}" for k, v in seconds.items()))
"""


def run_one(root, args, out):
    """{rule: seconds} of one checkout's inversion, its images saved at out."""
    proc = subprocess.run([sys.executable, "-c", ONE, str(root), str(args.target), str(args.classes), str(out)],
                          capture_output=True, text=True, check=True)
    return {k: float(v) for k, v in (item.split("=") for item in proc.stdout.split())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("before", type=Path, help="the checkout before the change")
    p.add_argument("after", type=Path, help="the checkout after it")
    p.add_argument("--target", type=Path, required=True, help="a run's models/target_best.pt")
    p.add_argument("--classes", type=int, default=10, help="the target's number of classes")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    import torch
    times = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:  # each side's images, private to this run
        for _ in range(args.repeats):
            for side in ("before", "after"):
                times[side].append(run_one(getattr(args, side), args, Path(tmp) / f"{side}.pt"))
                print(side, times[side][-1], flush=True)
        a, b = torch.load(Path(tmp) / "before.pt"), torch.load(Path(tmp) / "after.pt")
    for rule in times["before"][0]:
        before = statistics.median(t[rule] for t in times["before"])
        after = statistics.median(t[rule] for t in times["after"])
        print(f"{rule}: {before:.2f} s before, {after:.2f} s after, x{before / after:.2f}; images "
              f"{'identical' if torch.equal(a[rule], b[rule]) else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
