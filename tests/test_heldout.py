"""Issue 21: any split of the digits, a judge that never saw the private images, counts and variety, the ignorant
control, and an attack that receives the attacker's view only."""
import json
import math
import types

import pytest
import torch
import torch.nn as nn

import bf_mnist as bfm
from attacklab import attack, evaluation, tables
from attacklab.api import PredictionAPI
from attacklab.controls import ignorant_target, validate_controls
from attacklab.data import to_unit
from attacklab.judge import (JudgeNet, density_coverage, judge_metrics, judge_splits, load_judge,
                             reference_features)
from attacklab.metrics import wilson_interval
from attacklab.protocols import disjoint_protocol, private_digits_error, protocol_for
from attacklab.report import Logger
from attacklab.runtime import UserError
from conftest import synthetic_splits

CPU = torch.device("cpu")
SPLIT = (2, 5, 6, 8, 9)  # not contiguous, not sorted the way the target's labels are


class BarReader(nn.Module):
    """Reads the synthetic images' class bar (rows 2+2c..3+2c) as a 10-class logit vector: a perfect digit judge."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))  # a parameter, so callers can find its device
        self.head = nn.Identity()  # features and head, as the judge's network has

    def features(self, x):
        rows = x[:, 0, :, 4:24].mean(2)  # (n, 28)
        return torch.stack([rows[:, 2 + 2 * c:4 + 2 * c].mean(1) for c in range(10)], 1) * self.scale

    def forward(self, x):
        return self.head(self.features(x))


def test_a_noncontiguous_split_keeps_every_private_digit_from_the_attacker():
    data = synthetic_splits((4, 3, 2))
    p = protocol_for({"protocol": "disjoint", "private_digits": list(SPLIT)})
    assert p.private_classes == SPLIT and p.n_classes == 5
    aux_images, aux_digits = p.aux(data, {"dry_run": True})
    assert set(aux_digits.tolist()) == {0, 1, 3, 4, 7}  # every other digit, of every split
    assert len(aux_images) == 5 * (4 + 3 + 2)
    private = p.private(data)
    for split in ("train", "val", "test"):
        labels = private[split][1]
        assert set(labels.tolist()) == set(range(5))  # the target's labels 0..k-1
        x_all, y_all = data[split]
        for x, label in zip(private[split][0], labels):  # label i is the digit SPLIT[i]
            assert y_all[(x_all == x).flatten(1).all(1)].tolist() == [SPLIT[label]]
    private_bytes = {bytes(x.numpy()) for s in private.values() for x in s[0]}
    assert not private_bytes & {bytes(x.numpy()) for x in aux_images}


def test_the_evaluator_is_asked_about_the_real_digit():
    data = synthetic_splits((1, 1, 2))
    p = disjoint_protocol(SPLIT)
    images, labels = p.private(data)["test"]  # labels 0..4
    judge = types.SimpleNamespace(model=BarReader())
    target = BarReader()  # a target of any kind: only the evaluator's numbers are checked here
    right = evaluation.attack_accuracies(to_unit(images), labels, target, judge, SPLIT)
    assert right["accuracy_by_evaluator"] == 1.0 and right["per_class_accuracy_by_evaluator"] == [1.0] * 5
    shifted = evaluation.attack_accuracies(to_unit(images), (labels + 1) % 5, target, judge, SPLIT)
    assert shifted["accuracy_by_evaluator"] == 0.0


@pytest.mark.parametrize("protocol, digits, fragment", [
    ("same", [1, 2], "--protocol disjoint"), ("disjoint", [1, 1, 2], "distinct"),
    ("disjoint", [3, 10], "distinct"), ("disjoint", [4], "at least 2"), ("disjoint", list(range(10)), "at least 1")])
def test_a_split_that_cannot_be_used_gets_one_sentence(protocol, digits, fragment):
    assert fragment in private_digits_error(protocol, digits)


def test_the_protocols_own_digits_are_accepted():
    assert private_digits_error("same", list(range(10))) is None  # what a resumed `same` run's config holds
    assert private_digits_error("disjoint", [0, 1, 2, 3, 4]) is None


def test_the_judge_trains_only_where_the_provider_and_the_attacker_did_not():
    assert judge_splits("disjoint", "test") == ["val", "test"]
    assert judge_splits("same", "test") == ["val"] and judge_splits("same", "val") == ["test"]
    assert "train" not in judge_splits("letters", "test")


def test_the_judge_is_another_network_than_the_evaluator():
    from attacklab.evaluator import EvaluatorNet
    judge, evaluator = JudgeNet(), EvaluatorNet()
    assert judge(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert not {type(m) for m in judge.modules()} & {nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU}
    assert {type(m) for m in evaluator.modules()} & {nn.BatchNorm2d}


def test_the_judge_is_cached_per_seed_and_data(tmp_path, monkeypatch):
    data = synthetic_splits((2, 3, 3))
    path = tmp_path / "judge.pt"
    model, info = load_judge(data, ["val", "test"], 0, CPU, path, dry_run=True, log=lambda *_: None)
    assert info["trained_on"] == ["val", "test"] and info["n_train_images"] == 60
    monkeypatch.setattr("attacklab.judge.train_judge_net", lambda *a, **k: pytest.fail("trained again"))
    again, _ = load_judge(data, ["val", "test"], 0, CPU, path, dry_run=True, log=lambda *_: None)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    monkeypatch.undo()
    other = synthetic_splits((2, 3, 3), seed=1)
    retrained, _ = load_judge(other, ["val", "test"], 0, CPU, path, dry_run=True, log=lambda *_: None)
    assert retrained is not None  # other data: a new judge, not the cached one


def test_density_and_coverage_on_known_sets():
    torch.manual_seed(0)
    real = torch.randn(200, 4)
    assert density_coverage(real, real.clone())["coverage"] == 1.0  # every ball holds its own centre
    assert density_coverage(real, real + 0.01)["coverage"] > 0.95
    one_point = density_coverage(real, real[:1].repeat(200, 1) + 0.01)
    assert one_point["coverage"] < 0.1  # one drawing repeated covers almost nothing
    assert one_point["density"] > 0
    far = density_coverage(real, torch.randn(200, 4) + 100)
    assert far == {"density": 0.0, "coverage": 0.0}
    fresh = density_coverage(real, torch.randn(200, 4))
    assert 0.9 < fresh["coverage"] <= 1.0 and 0.7 < fresh["density"] < 1.3  # the same distribution: ~1 and ~1
    assert math.isnan(density_coverage(real, torch.empty(0, 4))["coverage"])  # no samples: no number


def test_wilson_interval_matches_the_textbook_example():
    low, high = wilson_interval(81, 263)  # Wilson (1927) as worked in Newcombe (1998): 0.2553 to 0.3662
    assert low == pytest.approx(0.2553, abs=1e-4) and high == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 10)[0] == 0.0


def test_judge_metrics_count_per_digit_and_any_private_digit():
    data = synthetic_splits((6, 1, 1))
    images, digits = data["train"]
    keep = torch.isin(digits, torch.tensor(SPLIT))
    reference = {d: images[digits == d] for d in SPLIT}
    asked = digits[keep].clone()
    asked[asked == 9] = 2  # the 9s are asked as 2s: wrong, but still a private digit
    reader = BarReader()
    m = judge_metrics(reader, to_unit(images[keep]), asked, SPLIT, reference_features(reader, reference))
    assert math.isnan(m["per_digit"]["9"]["accuracy"])  # nothing asked as 9
    assert m["per_digit"]["2"]["accuracy"] == 0.5 and m["any_private"] == 1.0
    assert m["counts"][0] == [6, 12] and m["per_digit"]["5"]["wilson95"][1] == pytest.approx(1.0)
    called = m["per_digit"]["2"]["called"]  # what the judge named the images asked as 2
    assert called[2] == called[9] == 6 and sum(called) == 12 and len(called) == 10


def test_the_digit_table_names_what_a_failed_digit_was_drawn_as(tmp_path):
    for seed in (1, 2):
        results = _fake_run(tmp_path / "split", seed, [10, 10, 10, 10, 3])
        results["attack"]["judge"]["per_digit"]["9"]["called"] = [0, 0, 0, 0, 6, 0, 0, 1, 0, 3]  # mostly a 4
        for d in "5678":
            results["attack"]["judge"]["per_digit"][d]["called"] = [10 if i == int(d) else 0 for i in range(10)]
        (tmp_path / "split" / f"seed_{seed}" / "results.json").write_text(json.dumps(results))
    rows = {line.split("|")[2].strip(): line.split("|")[-2].strip()
            for line in tables.digit_table([tmp_path / "split"]).splitlines()[2:]}
    assert rows["9"] == "4 (0.60)" and rows["5"] == "none"


def test_a_texture_that_fools_only_the_judge_does_not_count_for_both():
    data = synthetic_splits((4, 1, 1))
    images, digits = data["train"]
    keep = torch.isin(digits, torch.tensor(SPLIT))
    x, asked = to_unit(images[keep]), digits[keep]
    reader = BarReader()
    judged = judge_metrics(reader, x, asked, SPLIT, reference_features(reader, {d: images[digits == d] for d in SPLIT}))

    class Evaluator(nn.Module):  # agrees with the judge except on the 8s, which it calls 3
        def __init__(self):
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(1))  # so callers can find its device

        def forward(self, images01):
            logits = reader(images01)
            return torch.where((logits.argmax(1) == 8)[:, None], torch.eye(10)[3].expand_as(logits), logits)
    evaluation.with_evaluator(judged, types.SimpleNamespace(model=reader), types.SimpleNamespace(model=Evaluator()),
                              x, asked)
    assert judged["per_digit"]["8"]["accuracy"] == 1.0 and judged["per_digit"]["8"]["accuracy_with_evaluator"] == 0.0
    assert judged["per_digit"]["2"]["accuracy_with_evaluator"] == 1.0
    assert judged["accuracy_with_evaluator"] == pytest.approx(0.8)


def _fake_run(folder, seed, per_digit_passes, n=10, digits=(5, 6, 7, 8, 9)):
    """A run folder with the fields tables.py reads (the attack and a no-leak control judged)."""
    def judged(passes):
        return {"accuracy": sum(passes) / (n * len(passes)), "any_private": 1.0, "density": 0.5, "coverage": 0.1,
                "counts": [[k, n] for k in passes],
                "per_digit": {str(d): {"accuracy": k / n, "density": 0.5, "coverage": 0.1, "any_private": 1.0}
                              for d, k in zip(digits, passes)}}
    results = {"private_digits": list(digits), "target": {"test_accuracy": 0.99},
               "judge": {"accuracy_on_private_train": 0.99},
               "evaluator": {"seed": 0},
               "attack": {"accuracy_by_evaluator": 0.8, "per_class_accuracy_by_evaluator": [0.8] * 5,
                          "accuracy_by_target": 1.0, "fid_evaluator": 9.0, "knn_dist": 9.0,
                          "judge": judged(per_digit_passes)},
               "controls": {"no_leak": {"accuracy_by_evaluator": 0.1, "judge": judged([1] * 5)},
                            "mi_face_art": {"accuracy_by_evaluator": 0.2, "judge": judged([3] * 5)}}}
    (folder / f"seed_{seed}").mkdir(parents=True)
    (folder / f"seed_{seed}" / "results.json").write_text(json.dumps(results))
    return results


def test_the_table_pools_counts_over_seeds(tmp_path, capsys):
    _fake_run(tmp_path / "split", 1, [10, 10, 4, 10, 10])
    _fake_run(tmp_path / "split", 2, [10, 10, 10, 0, 10])
    assert tables.main([str(tmp_path / "split")]) == 0
    out = capsys.readouterr().out
    assert "2 of 10" in out  # two (seed, digit) cells below 0.5
    header, _, row = out.splitlines()[:3]
    columns = dict(zip(*([c.strip() for c in line.strip("|").split("|")] for line in (header, row))))
    assert columns["no-leak, judge"] == "0.100 ± 0.000"
    assert columns["MI-FACE (ART's loop, defaults), judge"] == "0.300 ± 0.000"
    assert columns["MI-FACE (stop at p 0.99, 1,000 steps), judge"] == "—"  # a control the runs lack
    assert "| 7 | 14 / 20 |" in out and "| 8 | 10 / 20 |" in out
    low, high = wilson_interval(14, 20)
    assert f"{low:.2f}–{high:.2f}" in out
    assert tables.main(["--headline", str(tmp_path / "split")]) == 0
    header, _, row, *rest = capsys.readouterr().out.splitlines()
    headline = dict(zip(*([c.strip() for c in line.strip("|").split("|")] for line in (header, row))))
    assert not rest and headline["cells < 0.5 (judge)"] == "2 of 10"  # the front page's row, no per-digit table
    assert headline["no-leak, judge"] == "0.100 ± 0.000" and "density" not in headline
    assert tables.main([str(tmp_path / "empty")]) == 2


def test_the_table_reports_each_judge_seed_beside_the_runs_own(tmp_path, capsys):
    for seed in (1, 2):
        results = _fake_run(tmp_path / "split", seed, [10] * 5)  # the own judge (seed 0): 1.0
        other = dict(results, judge={"seed": 1}, attack=dict(results["attack"], judge={"accuracy": 0.25 * seed}))
        (tmp_path / "split" / f"seed_{seed}" / "results_judge1.json").write_text(json.dumps(other))
        (tmp_path / "split" / f"seed_{seed}" / "results_evaluator2_judge1.json").write_text(json.dumps(other))
    assert tables.main([str(tmp_path / "split")]) == 0
    header, _, row = capsys.readouterr().out.splitlines()[:3]
    columns = dict(zip(*([c.strip() for c in line.strip("|").split("|")] for line in (header, row))))
    assert columns["attack, judge seeds"] == "1.000 ± 0.000 (0) / 0.375 ± 0.177 (1)"
    assert columns["attack, evaluator seeds"] == "0.800 ± 0.000 (0)"  # the file of both is in neither column


def test_a_number_that_only_some_seeds_have_says_how_many(tmp_path, capsys):
    for seed in (1, 2):
        results = _fake_run(tmp_path / "split", seed, [10] * 5)
    results["controls"]["ignorant"] = {"judge": dict(results["controls"]["no_leak"]["judge"], accuracy=0.3)}
    (tmp_path / "split" / "seed_2" / "results.json").write_text(json.dumps(results))  # added to seed 2 only
    (tmp_path / "split" / "seed_2" / "results_evaluator1.json").write_text(
        json.dumps(dict(results, evaluator={"seed": 1})))
    assert tables.main([str(tmp_path / "split")]) == 0
    header, _, row = capsys.readouterr().out.splitlines()[:3]
    columns = dict(zip(*([c.strip() for c in line.strip("|").split("|")] for line in (header, row))))
    assert columns["ignorant, judge (any private)"] == "0.300 (1.000) [1 of 2 seeds]"
    assert columns["attack, evaluator seeds"] == "0.800 ± 0.000 (0) / 0.800 [1 of 2 seeds] (1)"
    assert columns["no-leak, judge"] == "0.100 ± 0.000"  # every seed has it: no note


def test_a_seeds_summary_pools_the_judges_counts(tmp_path, capsys):
    runs = {1: _fake_run(tmp_path / "split", 1, [10, 10, 4, 10, 10]), 2: _fake_run(tmp_path / "split", 2, [10] * 5)}
    runs[2]["controls"].pop("mi_face_art")  # a control added to one seed only, later (--evaluate --controls)
    summary = evaluation.summarise(runs, tmp_path / "seeds_summary.json")
    assert summary["controls.no_leak"]["seeds"] == [1, 2]
    assert summary["controls.mi_face_art"]["seeds"] == summary["judge.mi_face_art"]["seeds"] == [1]  # where it ran
    assert summary["judge.mi_face_art"]["values"] == [runs[1]["controls"]["mi_face_art"]["judge"]["accuracy"]]
    written = json.loads((tmp_path / "seeds_summary.json").read_text())
    assert written["judge_pooled_by_digit"]["7"]["passed"] == 14 and written["judge_pooled_by_digit"]["7"]["n"] == 20
    assert summary["judge.cells_below_0.5"] == {"cells": 1, "of": 10}
    assert summary["judge.no_leak"]["mean"] == pytest.approx(0.1)
    assert "[1 of 2 seeds]" in next(line for line in capsys.readouterr().out.splitlines()
                                     if line.startswith("mi_face_art by the held-out judge"))


def test_the_ignorant_target_knows_letters_only(tmp_path):
    model, accuracy = ignorant_target(5, tmp_path, CPU, dry_run=True)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 5) and 0.0 <= accuracy <= 1.0
    with pytest.raises(UserError, match="letters"):
        validate_controls(["ignorant"], "letters", "corrected")


def _reachable(roots, skip=()):
    """Every object reachable from roots through attributes, containers, closures and bound methods."""
    seen, stack, out = set(), list(roots), []
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (types.ModuleType, type)) or any(obj is s for s in skip):
            continue
        seen.add(id(obj))
        out.append(obj)
        if isinstance(obj, dict):
            stack += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        elif isinstance(obj, types.FunctionType):
            stack += [c.cell_contents for c in (obj.__closure__ or ()) if _filled(c)] + list(obj.__defaults__ or ())
        elif isinstance(obj, types.MethodType):
            stack += [obj.__self__, obj.__func__]
        elif hasattr(obj, "__dict__") and not isinstance(obj, torch.Tensor):
            stack += list(vars(obj).values())
    return out


def _filled(cell):
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def test_nothing_the_attack_receives_reaches_a_private_image_or_the_targets_weights(tmp_path):
    from main import run_config
    data = synthetic_splits((3, 1, 1))
    p = disjoint_protocol(SPLIT)
    target = bfm.TargetModel(base_channel=4, n_classes=5).eval()
    api = PredictionAPI(target)
    aux_images = p.aux(data, {"dry_run": True})[0]
    args = types.SimpleNamespace(**vars(__import__("main").build_parser().parse_args(
        ["--protocol", "disjoint", "--private_digits", *map(str, SPLIT), "--data_dir", str(tmp_path / "data"),
         "--epochs_gan", "1", "--gan_batch_size", "8", "--dim_initial_vec", "8", "--dry_run"])))
    paths = {k: tmp_path / k for k in ("run", "models", "samples", "tensorboard")}
    for folder in paths.values():
        folder.mkdir()
    cfg = run_config(args, paths, CPU)
    view = (attack.attacker_config(cfg), api, aux_images, attack.attacker_paths(paths), CPU)
    objects = _reachable(view, skip=(api._answer,))  # the API's answering function is the provider's side
    tensors = [o for o in objects if isinstance(o, torch.Tensor)]
    weights = {t.data_ptr() for t in target.state_dict().values()}
    private = {bytes(x.numpy()) for x in p.private(data)["train"][0]}
    assert not weights & {t.data_ptr() for t in tensors}
    assert not any(t.dtype == torch.uint8 and t.dim() >= 2 and any(bytes(x.numpy()) in private for x in t.reshape(
        -1, 28, 28)) for t in tensors)
    strings = {o for o in objects if isinstance(o, str)}
    assert str(tmp_path / "data") not in " ".join(strings) and "data_dir" not in strings
    assert "private_digits" not in strings and "protocol" not in strings
    assert not any(isinstance(o, nn.Module) for o in objects)  # no network: not the target, not a judge
    # and the attack runs on exactly that view, handing G out after each epoch
    logger = Logger(paths["tensorboard"])
    handed = []
    outcome = attack.complete(attack.run_inversion(*view[:4], CPU, logger, 1), lambda e, g: handed.append(e))
    logger.close()
    assert handed == [1] and outcome.g is not None and api.queries > 0


def test_main_speaks_in_the_real_digits_of_a_split(shared_tree, tmp_path):
    from PIL import Image
    from test_main import dry_run_args, main_py
    run = tmp_path / "split"
    main_py(*dry_run_args(shared_tree, run, "--protocol", "disjoint", "--private_digits", "9", "2", "5", "8", "6",
                          "--epochs_gan", 1, "--controls", "no_leak"))
    results = json.loads((run / "results.json").read_text())
    assert results["private_digits"] == [2, 5, 6, 8, 9]
    assert json.loads((run / "config.json").read_text())["flags"]["private_digits"] == [2, 5, 6, 8, 9]
    assert set(results["attack"]["judge"]["per_digit"]) == {"2", "5", "6", "8", "9"}
    assert 0.0 <= results["judge"]["accuracy_on_private_train"] <= 1.0 and "train" not in results["judge"]["trained_on"]
    assert "judge" in results["controls"]["no_leak"] and len(results["attack"]["per_class_accuracy_by_evaluator"]) == 5
    assert [r["epoch"] for r in json.loads((run / "monitor.json").read_text())] == [1]
    with Image.open(run / "samples" / "final_grid.png") as grid:
        assert grid.size == (302, 152)  # five rows, one per private digit


def test_main_refuses_a_split_for_another_protocol_in_one_line(tmp_path):
    from test_main import main_py
    proc = main_py("--private_digits", "1", "2", "--run_dir", tmp_path / "r", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--protocol disjoint" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_the_oracle_diagnostic_differs_from_its_source_only_in_the_surrogate(shared_tree, tmp_path):
    import subprocess
    import sys
    from test_main import REPO, dry_run_args, main_py
    source = tmp_path / "source" / "seed_3"
    main_py(*dry_run_args(shared_tree, source, "--protocol", "disjoint", "--controls", "none", "--seed", 3))

    def oracle(out, *extra):
        subprocess.run([sys.executable, str(REPO / "experiments" / "oracle_surrogate.py"), str(source), "--out", str(out),
                        "--data_dir", str(shared_tree), *extra], check=True, capture_output=True, timeout=600)
        return torch.load(out / "models" / "gan_last.pt", weights_only=False)["g"]

    g_source = torch.load(source / "models" / "gan_last.pt", weights_only=False)["g"]
    g_again, g_oracle = oracle(tmp_path / "again", "--surrogate", "source"), oracle(tmp_path / "oracle")
    assert all(torch.equal(g_source[k], g_again[k]) for k in g_source)  # the pairing: only the surrogate differs
    assert not all(torch.equal(g_source[k], g_oracle[k]) for k in g_source)
    assert json.loads((tmp_path / "oracle" / "results.json").read_text())["attack"]["judge"]["per_digit"]

