"""Results tables from run folders: every judge, every control, seeds pooled.

    python -m attacklab.tables runs/heldout/d56789 runs/heldout/odd ...
    python -m attacklab.tables runs/extraction          # an --attack extraction run: its rounding table
    python -m attacklab.tables --headline runs/heldout/odd ...   # the README's columns only

Each RUN_DIR is a --seeds folder (RUN_DIR/seed_<S>/results.json; results_evaluator<E>.json and
results_judge<J>.json from --evaluate --evaluator_seed E or --judge_seed J) or one run folder. Prints, per
folder: the attack and its controls by the held-out judge, the attack by each judge and evaluator seed
found (mean ± sample std over seeds; "[k of n seeds]" where only some seeds have that number), how many
(seed, digit) cells fall below 0.5, density and coverage; then per digit the pass counts pooled over
seeds with a Wilson 95 % interval. Samples of one cell are not independent draws (G draws nearly one
shape per digit): the cells are the honest unit, and the pooled interval is narrower than the truth.
"""
import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from attacklab.extraction import by_design_and_budget
from attacklab.metrics import wilson_interval

BAR = 0.5


def seed_folders(run_dir):
    """[(seed or None, folder)] of a --seeds folder, or of one run folder."""
    run_dir = Path(run_dir)
    if (run_dir / "results.json").is_file():
        return [(None, run_dir)]
    found = [(int(p.name.split("_")[1]), p) for p in run_dir.glob("seed_*") if (p / "results.json").is_file()]
    return sorted(found, key=lambda sp: sp[0])


def load_runs(run_dir, kind="evaluator"):
    """{seed: (its results.json, {seed of the evaluator (kind "evaluator") or judge (kind "judge"): results})}: the
    run's own file under its own seed, and every results_<kind><S>.json."""
    runs = {}
    for seed, folder in seed_folders(run_dir):
        own = json.loads((folder / "results.json").read_text())
        own_seed = own["evaluator"]["seed"] if kind == "evaluator" else (own.get("judge") or {}).get("seed", 0)
        by_seed = {own_seed: own}
        for path in folder.glob(f"results_{kind}*.json"):
            match = re.fullmatch(rf"results_{kind}(\d+)", path.stem)
            if match:
                by_seed[int(match.group(1))] = json.loads(path.read_text())
        runs[seed] = (own, by_seed)
    return runs


def row_of(results, key):
    """The attack's or one control's metrics (None when the run has no such control)."""
    return results["attack"] if key == "attack" else results.get("controls", {}).get(key)


def mean_std(values, digits=3):
    """'m ± s' over seeds (sample std); one value alone; '—' for none."""
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if len(values) == 0:
        return "—"
    return f"{values.mean():.{digits}f}" if len(values) == 1 else f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def seeds_note(k, n):
    """' [k of n seeds]' when only some of a folder's n seeds have a number, else ''."""
    return "" if k in (0, n) else f" [{k} of {n} seeds]"


def of_seeds(values, n, digits=3):
    """mean_std of the values the seeds have (None: a seed without one), saying when some of the n seeds lack one."""
    present = [v for v in values if v is not None]
    return mean_std(present, digits) + seeds_note(len(present), n)


def own_results(runs):
    """[each seed's own results.json] (its judge's numbers, its controls)."""
    return [own for own, _ in runs.values()]


def judge_rows(results_list, key):
    """The held-out judge's metrics of one row in each seed that has them."""
    rows = [row_of(r, key) for r in results_list]
    return [m["judge"] for m in rows if m is not None and "judge" in m]


def pooled_by_digit(judged, digits):
    """Per digit: passes and samples summed over seeds, the Wilson 95 % interval, the cells below the bar."""
    out = {}
    for i, d in enumerate(digits):
        passed = sum(j["counts"][i][0] for j in judged)
        n = sum(j["counts"][i][1] for j in judged)
        cells = [j["per_digit"][str(d)]["accuracy"] for j in judged]
        out[d] = {"passed": passed, "n": n, "wilson95": list(wilson_interval(passed, n)),
                  "cells_below": sum(c < BAR for c in cells), "cells": len(cells),
                  **{k: float(np.mean([j["per_digit"][str(d)][k] for j in judged]))
                     for k in ("density", "coverage", "any_private")}}
        both = [j["per_digit"][str(d)]["accuracy_with_evaluator"] for j in judged
                if "accuracy_with_evaluator" in j["per_digit"][str(d)]]
        out[d]["with_evaluator"] = float(np.mean(both)) if len(both) == len(judged) else None  # runs judged before: none
        called = [j["per_digit"][str(d)]["called"] for j in judged if "called" in j["per_digit"][str(d)]]
        out[d]["called"] = np.sum(called, 0).tolist() if called and len(called) == len(judged) else None
    return out


def cells_below(judged):
    """(cells below the bar, all cells) over seeds and digits."""
    cells = [p["accuracy"] for j in judged for p in j["per_digit"].values()]
    return sum(c < BAR for c in cells), len(cells)


SUMMARY_COLUMNS = ("runs", "private digits", "seeds", "target test acc.", "judge acc. on private train",
                   "attack, judge", "attack, judge seeds", "attack, evaluator seeds", "cells < 0.5 (judge)",
                   "attack, judge and evaluator both", "coverage", "density", "no-leak, judge",
                   "ignorant, judge (any private)", "aux as labelled, judge", "MI-FACE (ART's loop, defaults), judge",
                   "MI-FACE (stop at p 0.99, 1,000 steps), judge")
HEADLINE_COLUMNS = ("runs", "private digits", "seeds", "attack, judge", "cells < 0.5 (judge)", "coverage",
                    "attack, evaluator seeds", "no-leak, judge", "ignorant, judge (any private)",
                    "aux as labelled, judge", "MI-FACE (ART's loop, defaults), judge")


def seeds_cell(runs, pick):
    """'m ± s (S) / ...': pick(results) over the run seeds, for each evaluator or judge seed S found (load_runs)."""
    found = sorted({s for _, by in runs.values() for s in by})
    return " / ".join(f"{of_seeds([pick(by[s]) for _, by in runs.values() if s in by], len(runs))} ({s})"
                      for s in found)


def folder_summary(run_dir, runs):
    """{column: cell} of one folder (its load_runs): the attack and its controls by the judge and each evaluator seed."""
    own = own_results(runs)
    digits = own[0].get("private_digits", list(range(len(own[0]["attack"]["per_class_accuracy_by_evaluator"]))))
    judged = judge_rows(own, "attack")
    by_eval = seeds_cell(runs, lambda r: r["attack"]["accuracy_by_evaluator"])
    by_judge_seed = seeds_cell(load_runs(run_dir, "judge"), lambda r: r["attack"].get("judge", {}).get("accuracy"))
    below, total = cells_below(judged) if judged else (None, None)
    ignorant = judge_rows(own, "ignorant")
    n = len(own)
    control = {key: of_seeds([j["accuracy"] for j in judge_rows(own, key)], n)
               for key in ("no_leak", "aux_as_labelled", "mi_face_art", "mi_face")}
    if ignorant:  # its accuracy (the share the judge calls any private digit)
        accuracy, any_private = (mean_std([j[k] for j in ignorant]) for k in ("accuracy", "any_private"))
        control["ignorant"] = f"{accuracy} ({any_private})" + seeds_note(len(ignorant), n)
    cells = [Path(run_dir).as_posix(), " ".join(map(str, digits)), " ".join(str(s) for s in runs),
             mean_std([r["target"]["test_accuracy"] for r in own]),
             mean_std([r["judge"]["accuracy_on_private_train"] for r in own if r.get("judge")], 4),
             mean_std([j["accuracy"] for j in judged]), by_judge_seed, by_eval,
             f"{below} of {total}" if judged else "—",
             of_seeds([j.get("accuracy_with_evaluator") for j in judged], n),
             mean_std([j["coverage"] for j in judged]), mean_std([j["density"] for j in judged]),
             control["no_leak"], control.get("ignorant", "—"), control["aux_as_labelled"], control["mi_face_art"],
             control["mi_face"]]
    return dict(zip(SUMMARY_COLUMNS, cells))


def summary_table(run_dirs, columns=SUMMARY_COLUMNS):
    """One line per folder with the given columns (SUMMARY_COLUMNS: all; HEADLINE_COLUMNS: the front page's)."""
    lines = ["| " + " | ".join(columns) + " |", "| --- |" + " --- |" * (len(columns) - 1)]
    for run_dir in run_dirs:
        runs = load_runs(run_dir)
        if runs:
            summary = folder_summary(run_dir, runs)
            lines.append("| " + " | ".join(summary[c] for c in columns) + " |")
    return "\n".join(lines)


def digit_table(run_dirs, key="attack"):
    """Per digit of each folder: the row's passes pooled over seeds, Wilson 95 %, cells below 0.5, density, coverage."""
    lines = ["| runs | digit | passed / samples (pooled) | Wilson 95 % | cells < 0.5 | density | coverage | "
             "judged any private digit | judge and evaluator both | commonest wrong answer |", "| --- |" + " --- |" * 9]
    for run_dir in run_dirs:
        runs = load_runs(run_dir)
        own = own_results(runs) if runs else []
        judged = judge_rows(own, key)
        if not judged:
            continue
        for d, p in pooled_by_digit(judged, own[0]["private_digits"]).items():
            lines.append(f"| {Path(run_dir).as_posix()} | {d} | {p['passed']} / {p['n']} | "
                         f"{p['wilson95'][0]:.2f}–{p['wilson95'][1]:.2f} | {p['cells_below']} of {p['cells']} | "
                         f"{p['density']:.2f} | {p['coverage']:.2f} | {p['any_private']:.2f} | "
                         f"{'—' if p['with_evaluator'] is None else format(p['with_evaluator'], '.2f')} | "
                         f"{commonest_wrong(d, p['called'])} |")
    return "\n".join(lines)


def commonest_wrong(digit, called):
    """'4 (0.95)': the digit the judge most often named instead of the asked one, and its share; '—' if unrecorded."""
    if called is None or sum(called) == 0:
        return "—"
    others = [(n, d) for d, n in enumerate(called) if d != digit]
    n, d = max(others)
    return f"{d} ({n / sum(called):.2f})" if n else "none"


def extraction_table(run_dir):
    """An --attack extraction run's rounding table: agreement with the API per (API, query design, budget), by decimals."""
    out = json.loads((Path(run_dir) / "results.json").read_text())["extraction"]
    decimals = sorted({r["decimals"] for rows in out["rounded"].values() for r in rows})
    lines = ["| API | query design | queries | " + " | ".join(f"{d} decimals" for d in decimals) + " |",
             "| --- | --- | --- |" + " --- |" * len(decimals)]
    for name, rows in out["rounded"].items():
        for (design, budget), cells in by_design_and_budget(rows).items():
            queries = next(iter(cells.values()))["queries"]
            lines.append(f"| {name} | {design} | {queries} = {budget}(d + 1) | "
                         + " | ".join(f"{cells[d]['agreement']:.4f}" if d in cells else "—" for d in decimals) + " |")
    return "\n".join(lines)


def is_extraction(run_dir):
    """Whether a run folder holds an --attack extraction run."""
    path = Path(run_dir) / "results.json"
    return path.is_file() and "extraction" in json.loads(path.read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="--seeds folders (or run folders)")
    p.add_argument("--digits_of", default="attack", help="the row whose per-digit table is printed (attack, no_leak, ...)")
    p.add_argument("--headline", action="store_true",
                   help="print only the front page's columns of the summary table, and no per-digit table")
    args = p.parse_args(argv)
    missing = [d for d in args.run_dirs if not seed_folders(d)]
    if missing:
        print(f"tables: {', '.join(missing)} hold no finished run (no results.json, no seed_*/results.json); "
              "pass folders written by main.py", file=sys.stderr)
        return 2
    extraction = {d for d in args.run_dirs if is_extraction(d)}
    for run_dir in (d for d in args.run_dirs if d in extraction):
        print(extraction_table(run_dir))
        print()
    inversion = [d for d in args.run_dirs if d not in extraction]
    if inversion and args.headline:
        print(summary_table(inversion, HEADLINE_COLUMNS))
    elif inversion:
        print(summary_table(inversion))
        print()
        print(digit_table(inversion, args.digits_of))
    return 0


if __name__ == "__main__":
    sys.exit(main())
