"""main.py end to end, as a user runs it, on a tiny ImageFolder tree with --dry_run."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import bf_mnist as bfm
from attacklab.runfolder import RETIRED_FLAGS, load_run_config, upgrade_recipe
from attacklab.runtime import UserError
from conftest import REPO, same_numbers

PROMISED_TAGS = {"target/train_loss", "target/train_accuracy", "target/val_accuracy", "gan/loss_d", "gan/loss_g",
                 "attack/accuracy_by_target", "attack/accuracy_by_evaluator"}


def main_py(*args, check=True, timeout=600):
    """Run main.py in a subprocess exactly as a user would; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO.parent)
    if check and proc.returncode != 0:
        raise AssertionError(f"main.py {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def dry_run_args(data_dir, run_dir, *extra):
    return ["--dry_run", "--data_dir", data_dir, "--run_dir", run_dir, "--epochs_target_model", 2,
            "--gan_batch_size", 16, "--batch_size", 32, "--n_eval_per_class", 5, *extra]


@pytest.fixture(scope="module")
def data_dir(shared_tree):
    return shared_tree


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "first"
    main_py(*dry_run_args(data_dir, run_dir, "--epochs_gan", 10, "--checkpoint_every", 5, "--seed", 3))
    return run_dir


def test_every_promised_file_is_written(finished):
    for rel in ("config.json", "results.json", "report.png", "models/target_best.pt", "models/gan_last.pt",
                "models/surrogate.pt",
                "models/gan_epoch_010.pt", "samples/final_grid.png", "samples/epoch_001.png",
                "samples/epoch_010.png"):
        assert (finished / rel).is_file(), rel
    with Image.open(finished / "samples" / "final_grid.png") as img:
        assert img.size == (302, 302)
    cfg = json.loads((finished / "config.json").read_text())
    assert cfg["seed"] == 3 and cfg["device"] == "cpu" and cfg["versions"]["torch"] == str(torch.__version__)
    assert cfg["flags"]["epochs_gan"] == 10 and cfg["flags"]["variant"] == "corrected"


def test_results_json_has_the_promised_fields(finished):
    results = json.loads((finished / "results.json").read_text())
    assert set(results["target"]) == {"val_accuracy", "test_accuracy", "defence"}
    assert results["target"]["defence"] == {"name": "none", "strength": None}
    attack = results["attack"]
    for key in ("variant", "queries", "accuracy_by_target", "per_class_accuracy_by_target", "accuracy_by_evaluator",
                "per_class_accuracy_by_evaluator", "fid_evaluator", "knn_dist"):
        assert key in attack, key
    assert attack["queries"] == 30  # the 30 test images of the tiny tree, queried once
    assert set(attack["surrogate"]) == {"accuracy_on_aux_labels", "agreement_with_target_on_val"}
    assert len(attack["per_class_accuracy_by_target"]) == 10
    assert {"data", "target", "evaluator", "gan", "evaluation", "controls"} <= set(results["seconds"])
    assert {f"control_{name}" for name in results["controls"]} <= set(results["seconds"])  # where the time went
    assert set(results["reference"]) == {"real_test", "uniform_noise"}
    assert [h["epoch"] for h in results["history"]] == list(range(1, 11))


def test_tensorboard_has_every_promised_tag(finished):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(finished / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    assert PROMISED_TAGS <= set(acc.Tags()["scalars"])
    assert "samples" in acc.Tags()["images"]
    assert [e.step for e in acc.Scalars("gan/loss_g")] == list(range(1, 11))
    assert [e.step for e in acc.Scalars("target/val_accuracy")] == [1, 2]
    assert len(acc.Images("samples")) == 10


def test_a_saved_target_is_reused(finished, data_dir, tmp_path):
    run_dir = tmp_path / "reuse"
    main_py(*dry_run_args(data_dir, run_dir, "--epochs_gan", 1, "--training_flag", "false",
                          "--train_model_dir", finished / "models" / "target_best.pt"))
    first = json.loads((finished / "results.json").read_text())
    second = json.loads((run_dir / "results.json").read_text())
    assert second["target"] == first["target"]
    assert (run_dir / "models" / "target_best.pt").read_bytes() == (finished / "models" / "target_best.pt").read_bytes()
    assert not (run_dir / "models" / "target_last.pt").exists()  # nothing was trained


@pytest.mark.parametrize("text", ["False", "0", "no"])
def test_training_flag_false_is_false(text):
    sys.path.insert(0, str(REPO))
    import main
    assert main.build_parser().parse_args(["--training_flag", text]).training_flag is False


def test_evaluate_recomputes_the_same_metrics_in_a_moved_folder(data_dir, tmp_path):
    first = tmp_path / "run"  # its own run: the module's shared one is only read
    main_py(*dry_run_args(data_dir, first, "--epochs_gan", 2))
    run_dir = first.rename(tmp_path / "moved")  # its config.json still names the old folder
    before = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").unlink()  # recomputed from the checkpoints alone
    main_py("--evaluate", run_dir)
    assert not first.exists()
    after = json.loads((run_dir / "results.json").read_text())
    assert after["target"] == before["target"] and after["history"] == before["history"]
    assert same_numbers(after["attack"], before["attack"])  # FID and KNN: the same up to their last bits
    assert not same_numbers(after["attack"], dict(before["attack"], fid_evaluator=before["attack"]["fid_evaluator"] * 1.01))


def test_evaluate_keeps_a_control_an_earlier_evaluate_added(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)  # its config.json names the module's folder: only read from there
    results = json.loads((run_dir / "results.json").read_text())
    results["controls"]["no_leak"] = {"accuracy_by_evaluator": -1.0}  # as an earlier --evaluate --controls no_leak left it
    (run_dir / "results.json").write_text(json.dumps(results))
    main_py("--evaluate", run_dir)  # asked for nothing new: the added control is judged again, not dropped
    again = json.loads((run_dir / "results.json").read_text())["controls"]
    assert set(again) == set(results["controls"]) and 0 <= again["no_leak"]["accuracy_by_evaluator"] <= 1


def test_an_ensemble_of_surrogates_is_saved_and_read_back_by_evaluate(data_dir, tmp_path):
    run_dir = tmp_path / "ensemble"
    main_py(*dry_run_args(data_dir, run_dir, "--epochs_gan", 1, "--protocol", "disjoint", "--controls", "none",
                          "--recipe", "surrogate_models=2"))
    before = json.loads((run_dir / "results.json").read_text())
    members = torch.load(run_dir / "models" / "surrogate.pt", weights_only=True)["model"]
    assert {k.split(".")[1] for k in members} == {"0", "1"}  # two surrogates, both kept
    main_py("--evaluate", run_dir)
    after = json.loads((run_dir / "results.json").read_text())
    assert after["attack"] == before["attack"]  # surrogate agreement included: the same ensemble read back


@pytest.mark.parametrize("config", ['{"flags": {}}', '{"seed": 1}', '[1, 2]'])
def test_evaluate_and_resume_refuse_a_config_that_lacks_keys(data_dir, tmp_path, config):
    run_dir = tmp_path / "edited"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(config)
    for flag in ("--evaluate", "--resume"):
        proc = main_py(flag, run_dir, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "lacks" in proc.stderr


def test_surrogate_weight_zero_is_the_attack_without_a_surrogate(data_dir, tmp_path):
    run_dir = tmp_path / "no-surrogate"
    main_py(*dry_run_args(data_dir, run_dir, "--epochs_gan", 1, "--surrogate_weight", 0))
    assert not (run_dir / "models" / "surrogate.pt").exists()
    assert json.loads((run_dir / "config.json").read_text())["recipe"]["surrogate_weight"] == 0
    assert json.loads((run_dir / "results.json").read_text())["attack"]["surrogate"] is None


def test_seeds_runs_each_seed_and_summarises(data_dir, tmp_path):
    base = tmp_path / "seeds"
    out = main_py(*dry_run_args(data_dir, base, "--epochs_gan", 1, "--seeds", 1, 2)).stdout
    runs = [json.loads((base / f"seed_{s}" / "results.json").read_text()) for s in (1, 2)]
    summary = json.loads((base / "seeds_summary.json").read_text())
    assert summary["seeds"] == [1, 2]
    values = [r["attack"]["accuracy_by_evaluator"] for r in runs]
    entry = summary["summary"]["attack.accuracy_by_evaluator"]
    assert entry["values"] == pytest.approx(values) and entry["mean"] == pytest.approx(sum(values) / 2)
    assert "attack.accuracy_by_evaluator:" in out and "±" in out
    # extending the sweep reads the finished seeds instead of running them again
    out = main_py(*dry_run_args(data_dir, base, "--epochs_gan", 1, "--seeds", 1, 2, 3)).stdout
    assert "seed 1: reading the finished run" in out and "seed 2: reading the finished run" in out
    summary = json.loads((base / "seeds_summary.json").read_text())
    assert summary["seeds"] == [1, 2, 3] and summary["summary"]["attack.accuracy_by_evaluator"]["values"][:2] == values
    # another attack's flags are not read by this one, so they do not make the run differ
    out = main_py(*dry_run_args(data_dir, base, "--epochs_gan", 1, "--seeds", 1, "--extraction_decimals", 5)).stdout
    assert "seed 1: reading the finished run" in out
    # ... but never a run made with other flags
    proc = main_py(*dry_run_args(data_dir, base, "--epochs_gan", 2, "--seeds", 1), check=False)
    assert proc.returncode == 2 and "--epochs_gan 1 there, 2 now" in proc.stderr


def test_the_no_leak_control_is_reused_across_targets_and_not_across_seeds(data_dir, tmp_path):
    args = ("--protocol", "disjoint", "--epochs_gan", 1, "--seed", 9, "--controls", "no_leak")
    first = main_py(*dry_run_args(data_dir, tmp_path / "a", *args)).stdout
    assert "the one trained for this attacker is in" not in first
    # another target (one epoch, not two): the control's G does not depend on it, so it is not trained again
    second = main_py(*dry_run_args(data_dir, tmp_path / "b", *args, "--epochs_target_model", 1)).stdout
    assert "the one trained for this attacker is in" in second
    g = [torch.load(tmp_path / run / "controls" / "no_leak" / "models" / "gan_last.pt", weights_only=False)["g"]
         for run in ("a", "b")]
    assert all(torch.equal(g[0][k], g[1][k]) for k in g[0])
    no_leak = [json.loads((tmp_path / run / "results.json").read_text())["controls"]["no_leak"] for run in ("a", "b")]
    assert no_leak[0]["accuracy_by_evaluator"] == no_leak[1]["accuracy_by_evaluator"]
    # another attacker seed is another control
    third = main_py(*dry_run_args(data_dir, tmp_path / "c", *args[:-4], "--seed", 10, "--controls", "no_leak")).stdout
    assert "the one trained for this attacker is in" not in third


def test_compare_grids_puts_runs_side_by_side(finished, tmp_path):
    out = tmp_path / "side_by_side.png"
    script = REPO / "bench" / "compare_grids.py"
    proc = subprocess.run([sys.executable, str(script), finished, finished, "--out", out], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as img:
        two_wide = img.size[0]
        assert two_wide >= 2 * img.size[1] * 0.8  # two panels across
    proc = subprocess.run([sys.executable, str(script), finished, "--real", "--out", out], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as img:
        assert img.size[0] == two_wide  # the run and its real private digits
    proc = subprocess.run([sys.executable, str(script), finished, tmp_path, "--out", out], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "has no results.json" in proc.stderr and "Traceback" not in proc.stderr
    sys.path.insert(0, str(script.parent))
    import compare_grids
    seed = json.loads((Path(finished) / "config.json").read_text())["seed"]
    assert f", seed {seed}\n" in compare_grids.panel_title(Path(finished))  # which run a panel shows
    assert f", seed {seed}\n" in compare_grids.panel_title(Path(finished) / "controls" / "mi_face")
    assert "(held-out judge)" in compare_grids.panel_title(Path(finished))
    digits = json.loads((Path(finished) / "results.json").read_text())["private_digits"]
    assert compare_grids.private_digits(Path(finished) / "controls" / "mi_face") == digits  # rows say the real digits
    real = compare_grids.real_grid(Path(finished), [7, 2], per_digit=3)
    assert real.shape == (2 + 30 * 2, 2 + 30 * 3, 3)


def test_where_time_goes_lists_every_stage_and_control(finished, tmp_path):
    script = REPO / "bench" / "where_time_goes.py"
    proc = subprocess.run([sys.executable, str(script), finished], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip() for line in proc.stdout.splitlines()[2:]}
    controls = json.loads((Path(finished) / "results.json").read_text())["controls"]
    assert {"target", "gan", "controls", "all stages"} | {f"control_{c}" for c in controls} <= rows
    proc = subprocess.run([sys.executable, str(script), tmp_path], capture_output=True, text=True)
    assert proc.returncode == 2 and "holds no results.json" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("protocol,k", [("disjoint", 5), ("letters", 10)])
def test_a_dry_run_of_each_protocol(data_dir, tmp_path, protocol, k):
    run_dir = tmp_path / protocol
    main_py(*dry_run_args(data_dir, run_dir, "--epochs_gan", 1, "--protocol", protocol))
    results = json.loads((run_dir / "results.json").read_text())
    attack = results["attack"]
    assert results["protocol"] == protocol and len(attack["per_class_accuracy_by_evaluator"]) == k
    assert set(results["controls"]) == {"no_leak", "aux_as_labelled", "mi_face_art", "mi_face"}
    assert (run_dir / "controls" / "mi_face_art.png").is_file() and (run_dir / "controls" / "mi_face.png").is_file()
    assert attack["queries"] <= attack["query_budget"] and "knn_aux" in attack
    assert results["controls"]["no_leak"]["queries"] == attack["queries"]  # the same attack, the same queries
    with Image.open(run_dir / "samples" / "final_grid.png") as img:
        assert img.size == (302, 2 + 30 * k)  # one row per private class
    assert (run_dir / "controls" / "no_leak" / "samples" / "final_grid.png").is_file()


def test_fgsm_runs_on_a_saved_target(finished, data_dir, tmp_path):
    run_dir = tmp_path / "fgsm"
    main_py(*dry_run_args(data_dir, run_dir, "--attack", "fgsm", "--training_flag", "false",
                          "--train_model_dir", finished / "models" / "target_best.pt", "--fgsm_target", 3))
    fgsm = json.loads((run_dir / "results.json").read_text())["fgsm"]
    assert fgsm["eps"] == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    for key in ("white_box", "transfer_to_evaluator", "black_box_via_surrogate", "targeted_success"):
        assert len(fgsm["accuracy"][key]) == 7
    # the attacker's own images labelled once, the test images once, and every adversarial batch sent
    assert fgsm["queries"] == 30 + 30 + 7 * 30  # val (its own), test once, 7 adversarial test batches
    assert fgsm["query_cost"] == {"surrogate": 30, "clean_labels": 30, "per_eps": 30, "one_eps": 90, "total": 270}
    assert (run_dir / "fgsm_accuracy.png").is_file() and (run_dir / "fgsm_examples.png").is_file()


def test_extraction_runs_and_recovers_the_regressions(finished, data_dir, tmp_path):
    run_dir = tmp_path / "extraction"
    main_py(*dry_run_args(data_dir, run_dir, "--attack", "extraction", "--training_flag", "false",
                          "--train_model_dir", finished / "models" / "target_best.pt", "--extraction_budgets", 10, 20,
                          "--extraction_queries", 1, 2, "--extraction_decimals", 3))
    out = json.loads((run_dir / "results.json").read_text())["extraction"]
    for name in ("binary", "softmax"):
        assert out[name]["queries"] == 785 and out[name]["agreement"] == 1.0
        assert out[name]["relative_param_error"] < 1e-6 and out[name]["with_d_queries"]["rank"] == 784
        cells = [(r["design"], r["queries"], r["decimals"]) for r in out["rounded"][name]]
        assert cells == [(design, m * 785, 3) for design in ("uniform", "scaled", "adaptive") for m in (1, 2)]
    from attacklab import tables
    table = tables.extraction_table(run_dir).splitlines()  # the README's rounding table, from this run folder
    assert table[0] == "| API | query design | queries | 3 decimals |" and len(table) == 2 + 2 * 3 * 2
    row = out["rounded"]["softmax"][-1]
    assert table[-1] == f"| softmax | adaptive | 1570 = 2(d + 1) | {row['agreement']:.4f} |"
    assert [r["queries"] for r in out["cnn"]] == [10, 20]
    assert (run_dir / "extraction_rounding.png").is_file()


def test_evaluate_with_another_evaluator_seed_writes_beside_the_results(finished):
    before, report = (finished / "results.json").read_bytes(), (finished / "report.png").read_bytes()
    main_py("--evaluate", finished, "--evaluator_seed", 7)
    other = json.loads((finished / "results_evaluator7.json").read_text())
    assert (finished / "results.json").read_bytes() == before  # the run's own numbers stay
    assert (finished / "report.png").read_bytes() == report and (finished / "report_evaluator7.png").is_file()
    assert other["evaluator"]["seed"] == 7 and set(other["controls"]) == set(json.loads(before)["controls"])
    assert other["attack"]["queries"] == json.loads(before)["attack"]["queries"]


def test_evaluate_with_another_judge_seed_writes_beside_the_results(finished):
    before = (finished / "results.json").read_bytes()
    main_py("--evaluate", finished, "--judge_seed", 3)
    other = json.loads((finished / "results_judge3.json").read_text())
    assert (finished / "results.json").read_bytes() == before and (finished / "report_judge3.png").is_file()
    assert other["judge"]["seed"] == 3 and json.loads(before)["judge"]["seed"] == 0
    assert other["attack"]["accuracy_by_evaluator"] == json.loads(before)["attack"]["accuracy_by_evaluator"]


def test_a_recipe_from_before_an_entry_existed_reads_that_entry_as_off():
    stored = {k: v for k, v in bfm.default_recipe("corrected", "disjoint").items()
              if k not in ("surrogate_noise", "surrogate_cutout")}
    recipe = upgrade_recipe(dict(stored, lr_decay="linear"), "corrected", "disjoint")
    assert recipe["surrogate_noise"] == 0.0 and recipe["surrogate_cutout"] == 0  # not today's disjoint 0.3 and 14
    assert recipe["lr_decay"] == "linear" and recipe["surrogate_weight"] == stored["surrogate_weight"]


def test_a_run_with_a_flag_that_left_the_code_reads_only_where_it_was_off(finished, tmp_path):
    cfg = json.loads((finished / "config.json").read_text())
    for value, readable in ((0, True), (20000, False)):
        cfg["flags"]["aux_letters"] = value
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        if readable:
            assert "aux_letters" not in load_run_config(tmp_path, "--evaluate")["flags"]
        else:
            with pytest.raises(UserError, match=f"git checkout {RETIRED_FLAGS['aux_letters'][1]}"):
                load_run_config(tmp_path, "--evaluate")


def test_a_recipe_with_an_entry_that_left_the_code_reads_only_where_it_was_off():
    stored = bfm.default_recipe("corrected", "disjoint")
    recipe = upgrade_recipe(dict(stored, g_average=0.0, mmd_patch=0), "corrected", "disjoint")
    assert recipe == stored  # off: nothing the code lacks
    with pytest.raises(UserError, match=f"git checkout {bfm.RETIRED_AT}"):
        upgrade_recipe(dict(stored, g_average=0.99), "corrected", "disjoint")
