"""The privacy-utility frontier: its cells (defence, strength, seed), and its table and plot from their run folders."""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attacklab.defences import DEFENCES

# the full frontier (docs/defences.md says how the strengths were chosen)
DEFAULT_DEFENCES = ("none", "label_smoothing_neg=-0.01,-0.05,-0.1", "dp_sgd=8,1", "mid=0.01,0.1,0.3", "bido=0.5,10")
DEFAULT_BUDGETS = (1000, 3000, 10000)


@dataclass(frozen=True)
class Cell:
    """One main.py run of the frontier: a defence at a strength (or the undefended target under a query budget)."""
    defence: str
    strength: float | None
    seed: int
    budget: int | None = None

    @property
    def point(self):
        """The frontier point this cell belongs to (its folder under the sweep's)."""
        if self.budget is not None:
            return f"budget_{self.budget}"
        return self.defence if self.strength is None else f"{self.defence}_{self.strength:g}"

    def folder(self, out):
        return Path(out) / self.point / f"seed_{self.seed}"

    def argv(self, out, protocol, dry_run, extra=()):
        """main.py's flags for this cell; the no-leak floor is measured once per seed, beside the undefended target."""
        args = ["--protocol", protocol, "--seed", self.seed, "--run_dir", self.folder(out), "--defence", self.defence,
                "--controls", "no_leak" if (self.defence == "none" and self.budget is None) else "none"]
        if self.strength is not None:
            args += ["--defence_strength", self.strength]
        if self.budget is not None:
            args += ["--query_budget", self.budget]
        return [str(a) for a in args + (["--dry_run"] if dry_run else []) + list(extra)]


def parse_defence(text):
    """'mid=0.01,0.1' -> [('mid', 0.01), ('mid', 0.1)]; 'none' -> [('none', None)]; a ValueError says what is wrong."""
    name, _, values = text.partition("=")
    if name not in DEFENCES:
        raise ValueError(f"{text!r}: no defence {name!r}; choose from {', '.join(DEFENCES)}")
    if name == "none":
        if values:
            raise ValueError(f"{text!r}: none takes no strengths; write none")
        return [("none", None)]
    try:
        strengths = [float(v) for v in values.split(",")] if values else [DEFENCES[name][1]]
    except ValueError:
        raise ValueError(f"{text!r}: strengths are numbers separated by commas, e.g. {name}={DEFENCES[name][1]}") from None
    bad = [s for s in strengths if not DEFENCES[name][2](s)]
    if bad:
        raise ValueError(f"{text!r}: {bad[0]:g} is not a valid strength; it is {DEFENCES[name][3]}")
    return [(name, s) for s in strengths]


def frontier_cells(defences, seeds, budgets=()):
    """Every cell: each defence at each strength, plus the undefended target under each query budget, per seed."""
    points = [p for text in defences for p in parse_defence(text)]
    if budgets and ("none", None) not in points:
        points.insert(0, ("none", None))  # the budgets' reference point
    cells = [Cell(d, s, seed) for d, s in points for seed in seeds]
    return cells + [Cell("none", None, seed, b) for b in budgets for seed in seeds]


# ---------------------------------------------------------------------------
# table and plot
# ---------------------------------------------------------------------------

def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values)


def _judge(section):
    """The held-out judge's accuracy of an attack (or control) section, else the evaluator's."""
    return section["judge"]["accuracy"] if "judge" in section else section["accuracy_by_evaluator"]


def summarise(out, cells):
    """One row per frontier point, from the finished cells' results.json, plus the no-leak floor."""
    rows, floor = [], []
    for point in dict.fromkeys(c.point for c in cells):
        finished = [json.loads((c.folder(out) / "results.json").read_text()) for c in cells
                    if c.point == point and (c.folder(out) / "results.json").is_file()]
        cell = next(c for c in cells if c.point == point)
        if not finished:
            rows.append({"point": point, "defence": cell.defence, "strength": cell.strength, "budget": cell.budget,
                         "seeds": 0})
            continue
        floor += [_judge(r["controls"]["no_leak"]) for r in finished if "no_leak" in r.get("controls", {})]
        defence = [r["target"].get("defence", {}) for r in finished]
        row = {"point": point, "defence": cell.defence, "strength": cell.strength, "budget": cell.budget,
               "seeds": len(finished),
               "test_accuracy": _mean_std([r["target"]["test_accuracy"] for r in finished])[:2],
               "attack_judge": _mean_std([_judge(r["attack"]) for r in finished])[:2],
               "attack_evaluator": _mean_std([r["attack"]["accuracy_by_evaluator"] for r in finished])[:2],
               "attack_both": _mean_std([r["attack"].get("judge", {}).get("accuracy_with_evaluator")
                                         for r in finished])[:2],
               "cells_below_half": sum(d["accuracy"] < 0.5 for r in finished
                                       for d in r["attack"].get("judge", {}).get("per_digit", {}).values()),
               "queries": _mean_std([r["attack"]["queries"] for r in finished])[0]}
        if cell.defence == "dp_sgd":
            row["epsilon"] = _mean_std([d.get("epsilon") for d in defence])[:2]
        rows.append(row)
    return {"rows": rows, "no_leak": _mean_std(floor)[:2] + (len(floor),)}


def _fmt(pair, digits=3):
    if not pair or pair[0] is None:
        return "—"
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def table_markdown(summary):
    """The frontier as a Markdown table (mean ± sample std over seeds)."""
    floor = summary["no_leak"]
    lines = ["| point | seeds | provider test acc | DP ε (δ = 1e-5) | attack, held-out judge | attack, evaluator "
             "| attack, judge and evaluator both | (seed, digit) cells < 0.5 | above the no-leak floor |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary["rows"]:
        if not r["seeds"]:
            lines.append(f"| {r['point']} | 0 | — | — | — | — | — | — | — |")
            continue
        gap = "—" if floor[0] is None else f"{r['attack_judge'][0] - floor[0]:+.3f}"
        lines.append(f"| {r['point']} | {r['seeds']} | {_fmt(r['test_accuracy'], 4)} | {_fmt(r.get('epsilon'), 2)} "
                     f"| {_fmt(r['attack_judge'])} | {_fmt(r['attack_evaluator'])} | {_fmt(r.get('attack_both'))} "
                     f"| {r['cells_below_half']} | {gap} |")
    lines.append(f"\nNo-leak floor (the same attack against a hash API, held-out judge): {_fmt(floor[:2])} "
                 f"over {floor[2]} seeds.")
    return "\n".join(lines)


def plot_frontier(summary, path):
    """frontier.png: provider test accuracy (x) against the attack's accuracy by the held-out judge (y)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    done = [r for r in summary["rows"] if r["seeds"]]
    for name in dict.fromkeys(r["defence"] if r["budget"] is None else "query budget" for r in done):
        rows = [r for r in done if (r["defence"] if r["budget"] is None else "query budget") == name]
        if name not in ("none", "query budget"):
            rows = [r for r in done if r["point"] == "none"] + rows  # each line starts at the undefended target
        xs, ys = [r["test_accuracy"] for r in rows], [r["attack_judge"] for r in rows]
        ax.errorbar([x[0] for x in xs], [y[0] for y in ys], xerr=[x[1] for x in xs], yerr=[y[1] for y in ys],
                    marker="o", capsize=3, label=name, linestyle="-" if len(rows) > 1 else "none")
        for r, x, y in zip(rows, xs, ys):
            if r["point"] != "none":
                ax.annotate(r["point"].split("_")[-1], (x[0], y[0]), textcoords="offset points", xytext=(4, 4),
                            fontsize=8)
    floor = summary["no_leak"]
    if floor[0] is not None:
        ax.axhline(floor[0], color="grey", linestyle="--", label="no-leak control (floor)")
        if floor[1]:
            ax.axhspan(floor[0] - floor[1], floor[0] + floor[1], color="grey", alpha=0.15)
    ax.set_xlabel("provider's test accuracy")
    ax.set_ylabel("attack accuracy by the held-out judge")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_frontier(out, cells):
    """frontier.json, frontier.md and frontier.png in out, from whichever cells have finished: the summary."""
    summary = summarise(out, cells)
    out = Path(out)
    (out / "frontier.json").write_text(json.dumps(summary, indent=1))
    (out / "frontier.md").write_text(table_markdown(summary) + "\n")
    plot_frontier(summary, out / "frontier.png")
    return summary
