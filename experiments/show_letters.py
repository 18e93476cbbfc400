"""Write a grid of the letters protocol's auxiliary images, so a person can see what the attacker holds.

    python experiments/show_letters.py --out bench/figures/letters_aux.png      # the first 100 of the cached set
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attacklab.data import CACHE_DIR  # noqa: E402
from attacklab.letters import load_letters  # noqa: E402
from attacklab.report import save_grid  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=str(REPO / "Data" / "MNIST"), help="where the letters set is cached")
    p.add_argument("--n", type=int, default=20000, help="size of the set (default: the protocol's 20,000)")
    p.add_argument("--seed", type=int, default=0, help="the set's seed (default: the protocol's 0)")
    p.add_argument("--show", type=int, default=100, help="how many images in the grid, 10 per row")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = p.parse_args()
    images, _ = load_letters(Path(args.data_dir) / CACHE_DIR, args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(images[:args.show].unsqueeze(1).float() / 255, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
