"""The frontier sweep on Ray, as the README runs it, on the tiny tree: cells, skip, resume, a failed cell, the table."""
import json
import subprocess
import sys

import pytest

from attacklab import frontier, sweep as sweep_module
from attacklab.data import CACHE_DIR
from conftest import REPO

HANG = 1800  # seconds: a guard against a hung sweep; a slow, busy machine takes ten minutes
TINY = ["--main_args", "--epochs_target_model", "2", "--gan_batch_size", "16", "--batch_size", "32",
        "--n_eval_per_class", "5", "--epochs_gan", "1"]


def sweep(out, data_dir, *args):
    """python -m attacklab.sweep frontier ... as a user runs it (2 CPUs, dry cells on data_dir)."""
    cmd = [sys.executable, "-m", "attacklab.sweep", "frontier", "--out", str(out), "--dry_run", "--cpus", "2",
           *args, *TINY, "--data_dir", str(data_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=HANG)


def test_cells_name_their_points_and_pass_their_flags(tmp_path):
    cells = frontier.frontier_cells(["mid=0.01,0.1", "dp_sgd=3"], seeds=[1, 2], budgets=[1000])
    assert [c.point for c in cells[::2]] == ["none", "mid_0.01", "mid_0.1", "dp_sgd_3", "budget_1000"]
    argv = cells[2].argv(tmp_path, "disjoint", True)
    assert argv[argv.index("--defence") + 1] == "mid" and argv[argv.index("--defence_strength") + 1] == "0.01"
    assert argv[argv.index("--controls") + 1] == "none" and "--dry_run" in argv
    none = cells[0].argv(tmp_path, "disjoint", False)
    assert none[none.index("--controls") + 1] == "no_leak" and "--defence_strength" not in none
    budget = cells[-1].argv(tmp_path, "disjoint", False)
    assert budget[budget.index("--query_budget") + 1] == "1000" and budget[budget.index("--controls") + 1] == "none"


@pytest.mark.parametrize("text,fragment", [("nope=1", "choose from"), ("mid=x", "numbers separated"),
                                           ("dp_sgd=0", "above 0"), ("none=1", "no strengths")])
def test_bad_defences_are_one_sentence(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        frontier.parse_defence(text)


def test_frontier_runs_skips_finished_cells_resumes_and_reports_a_failed_one(shared_tree, tmp_path):
    out = tmp_path / "frontier"
    first = sweep(out, shared_tree, "--defences", "none", "mid=0.1", "--budgets", "40", "--seeds", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "3 cells, 0 finished earlier, 3 to run" in first.stdout
    assert first.stdout.count("held-out judge (") == 3  # one progress line per finished cell
    summary = json.loads((out / "frontier.json").read_text())
    assert [r["point"] for r in summary["rows"]] == ["none", "mid_0.1", "budget_40"]
    assert all(r["seeds"] == 1 for r in summary["rows"]) and summary["no_leak"][2] == 1
    assert (out / "frontier.png").stat().st_size > 0 and "| mid_0.1 | 1 |" in (out / "frontier.md").read_text()
    mid = json.loads((out / "mid_0.1" / "seed_1" / "results.json").read_text())
    assert mid["target"]["defence"]["name"] == "mid" and mid["target"]["defence"]["kl"] > 0
    assert json.loads((out / "budget_40" / "seed_1" / "results.json").read_text())["attack"]["queries"] <= 40

    # as if killed: mid's run lost its results (it resumes from its checkpoints), the none cell is kept as is
    kept = (out / "none" / "seed_1" / "results.json").stat().st_mtime_ns
    (out / "mid_0.1" / "seed_1" / "results.json").unlink()
    # and a cell whose folder is broken: it fails, the others go on
    (out / "bido_0.05" / "seed_1").mkdir(parents=True)
    (out / "bido_0.05" / "seed_1" / "config.json").write_text("{}")
    again = sweep(out, shared_tree, "--defences", "none", "mid=0.1", "bido", "--budgets", "40", "--seeds", "1")
    assert again.returncode == 1
    assert "4 cells, 2 finished earlier, 2 to run" in again.stdout
    assert "bido_0.05 seed 1: FAILED" in again.stdout and "1 cell(s) failed: bido_0.05 seed 1" in again.stderr
    assert (out / "mid_0.1" / "seed_1" / "results.json").is_file()
    assert (out / "none" / "seed_1" / "results.json").stat().st_mtime_ns == kept


def test_seeds_run_as_ray_tasks_and_a_folder_of_other_flags_is_refused(shared_tree, tmp_path):
    base = tmp_path / "seeds"
    flags = ["--dry_run", "--data_dir", str(shared_tree), *TINY[1:], "--protocol", "disjoint", "--controls", "none"]
    cmd = [sys.executable, "-m", "attacklab.sweep", "seeds", "--run_dir", str(base), "--seeds", "1", "2", "--cpus", "2"]
    proc = subprocess.run([*cmd, "--main_args", *flags], capture_output=True, text=True, cwd=REPO, timeout=HANG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((base / "seeds_summary.json").read_text())
    assert summary["seeds"] == [1, 2] and len(summary["summary"]["attack.accuracy_by_evaluator"]["values"]) == 2
    assert json.loads((base / "seed_2" / "config.json").read_text())["seed"] == 2
    assert "] seed 2: " in proc.stdout and "seed seed" not in proc.stdout  # each finished cell named once
    other = subprocess.run([*cmd, "--main_args", *flags, "--epochs_gan", "2"], capture_output=True, text=True,
                           cwd=REPO, timeout=HANG)
    assert other.returncode == 2 and "was run with other flags" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_cells_that_run_side_by_side_find_the_evaluator_and_judge_trained_once(tiny_tree, capsys):
    argv = ["--data_dir", str(tiny_tree), "--protocol", "disjoint", *TINY[1:]]
    sweep_module.warm_caches(argv + ["--dry_run"])  # a dry cell trains its own throwaway ones
    assert not (tiny_tree / CACHE_DIR / "evaluator_seed0.pt").exists()
    sweep_module.warm_caches(argv)
    cached = {p.name: p.stat().st_mtime_ns for p in (tiny_tree / CACHE_DIR).glob("*.pt")}
    assert "evaluator_seed0.pt" in cached and "judge_seed0_val_test.pt" in cached
    assert "training the evaluation classifier" in capsys.readouterr().out
    sweep_module.warm_caches(argv)  # a second sweep reads them
    assert "training" not in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (tiny_tree / CACHE_DIR).glob("*.pt")} == cached


def test_the_frontier_table_counts_what_the_judge_and_the_evaluator_both_read(tmp_path):
    cells = frontier.frontier_cells(["mid=0.1"], seeds=[1, 2, 3])
    for cell, both in zip(cells, (0.2, 0.6)):  # seed 3 never finished
        cell.folder(tmp_path).mkdir(parents=True)
        judge = {"accuracy": 0.95, "accuracy_with_evaluator": both, "per_digit": {}}
        (cell.folder(tmp_path) / "results.json").write_text(json.dumps(
            {"target": {"test_accuracy": 0.98, "defence": {}}, "controls": {},
             "attack": {"accuracy_by_evaluator": 0.9, "queries": 10, "judge": judge}}))
    summary = frontier.summarise(tmp_path, cells)
    row = summary["rows"][0]
    assert row["seeds"] == 2 and row["attack_both"][0] == pytest.approx(0.4) and row["attack_both"][1] > 0
    table = frontier.table_markdown(summary)
    assert "| attack, judge and evaluator both |" in table and "| 0.400 ± 0.283 |" in table
