"""One table of recipe-search rows run on several (target, attack seed) pairs: each pair's score, the mean, the weakest class.

    python experiments/search_table.py runs/disjoint_search_t1s1 runs/disjoint_search_t2s2 \
        runs/disjoint_search_t3s3 --rows step_decay affine

Each folder holds one recipe_search.py --out (one target, one attack seed); a row missing in a folder
shows as "-" and is left out of the mean. Reads results.json only (the evaluator the rows ran with).
"""
import argparse
import json
from pathlib import Path


def row_scores(folders, row):
    """(evaluator accuracy, lowest class) per folder for one row; None where the row was not run."""
    scores = []
    for folder in folders:
        path = Path(folder) / row / "results.json"
        if not path.is_file():
            scores.append(None)
            continue
        attack = json.loads(path.read_text())["attack"]
        scores.append((attack["accuracy_by_evaluator"], min(attack["per_class_accuracy_by_evaluator"])))
    return scores


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="recipe_search.py output folders, one per (target, seed) pair")
    p.add_argument("--rows", nargs="+", required=True, help="row names (subfolders) to compare")
    args = p.parse_args()
    names = [Path(f).name for f in args.folders]
    print("| row | " + " | ".join(names) + " | mean | lowest class |")
    print("| --- | " + " | ".join("---" for _ in names) + " | --- | --- |")
    for row in args.rows:
        scores = row_scores(args.folders, row)
        done = [s for s in scores if s is not None]
        cells = [f"{s[0]:.3f} ({s[1]:.2f})" if s else "-" for s in scores]
        mean = f"{sum(s[0] for s in done) / len(done):.3f}" if done else "-"
        low = f"{min(s[1] for s in done):.2f}" if done else "-"
        print(f"| `{row}` | " + " | ".join(cells) + f" | {mean} | {low} |")


if __name__ == "__main__":
    main()
