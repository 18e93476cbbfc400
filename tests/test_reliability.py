"""Bad input costs one sentence (exit 2, no traceback, nothing written over); a killed run resumes exactly."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import bf_mnist as bfm
from attacklab.runtime import load_checkpoint, save_atomic
from conftest import REPO
from test_main import dry_run_args, main_py


@pytest.fixture
def data_dir(tiny_tree):
    return tiny_tree


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def fails(*args):
    return main_py(*args, check=False)


def test_data_dir_that_is_a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("x")
    assert_one_line_error(fails(*dry_run_args(path, tmp_path / "run")), "is a file", str(path))
    assert path.read_text() == "x"


def test_data_dir_with_other_files_but_no_layout(tmp_path):
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "a.txt").write_text("keep me")
    assert_one_line_error(fails(*dry_run_args(folder, tmp_path / "run")), "train", "val", "test")
    assert os.listdir(folder) == ["a.txt"]


def test_wrong_number_of_classes(data_dir, tmp_path):
    for c in ("8", "9"):
        for f in (data_dir / "train" / c).iterdir():
            f.unlink()
        (data_dir / "train" / c).rmdir()
    assert_one_line_error(fails(*dry_run_args(data_dir, tmp_path / "run")), "8 class folders", "expected 10")


def test_image_of_the_wrong_size_is_named(data_dir, tmp_path):
    bad = data_dir / "val" / "4" / "big.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8), mode="L").save(bad)
    assert_one_line_error(fails(*dry_run_args(data_dir, tmp_path / "run")), str(bad), "28x28")


def test_non_image_file_is_named(data_dir, tmp_path):
    bad = data_dir / "test" / "2" / "readme.txt"
    bad.write_text("hello")
    assert_one_line_error(fails(*dry_run_args(data_dir, tmp_path / "run")), str(bad), "not an image")


def test_unreadable_png_is_named(data_dir, tmp_path):
    bad = data_dir / "train" / "1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert_one_line_error(fails(*dry_run_args(data_dir, tmp_path / "run")), str(bad), "cannot be read")


@pytest.mark.parametrize("flag,value", [("--batch_size", 0), ("--epochs_gan", -1), ("--epochs_target_model", 0),
                                        ("--dim_initial_vec", 0), ("--n_eval_per_class", -5),
                                        ("--gan_batch_size", 0), ("--checkpoint_every", 0)])
def test_zero_or_negative_sizes_and_epochs(tmp_path, flag, value):
    proc = fails("--run_dir", tmp_path / "run", flag, value)
    assert_one_line_error(proc, flag, "at least 1")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["-1", "nan", "much"])
def test_a_bad_surrogate_weight(tmp_path, value):
    proc = fails("--run_dir", tmp_path / "run", "--surrogate_weight", value)
    assert_one_line_error(proc, "--surrogate_weight", value)
    assert not (tmp_path / "run").exists()


def test_unwritable_run_folder(data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a folder is needed: unwritable even for root
    assert_one_line_error(fails(*dry_run_args(data_dir, blocker / "run")), "writable --run_dir")


@pytest.mark.parametrize("flags", [["--devicen", "3"], ["--ngpu", "2"]])
def test_absent_gpus(data_dir, tmp_path, flags):
    if torch.cuda.device_count() >= 4:
        pytest.skip("this machine has those GPUs")
    assert_one_line_error(fails(*dry_run_args(data_dir, tmp_path / "run"), *flags), "GPU")


def make_checkpoint_files(tmp_path):
    good = {"kind": "target", "model": bfm.TargetModel().state_dict(), "val_accuracy": 0.5, "epoch": 1}
    torch.save(good, tmp_path / "good.pt")
    blob = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "text.pt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    torch.save(dict(good, model=bfm.TargetModel(base_channel=8).state_dict()), tmp_path / "other_arch.pt")


@pytest.mark.parametrize("name,fragment", [("missing.pt", "does not exist"), ("truncated.pt", "truncated"),
                                           ("text.pt", "truncated or not"), ("foreign.pt", "not a target checkpoint"),
                                           ("other_arch.pt", "another architecture")])
def test_bad_train_model_dir(data_dir, tmp_path, name, fragment):
    make_checkpoint_files(tmp_path)
    proc = fails(*dry_run_args(data_dir, tmp_path / "run", "--training_flag", "false",
                               "--train_model_dir", tmp_path / name))
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "run" / "config.json").exists()  # the run folder can be used again as it is


def test_a_finished_run_is_never_overwritten(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text('{"precious": true}')
    assert_one_line_error(fails(*dry_run_args(data_dir, run_dir)), "--resume", "--run_dir")
    assert json.loads((run_dir / "results.json").read_text()) == {"precious": True}


def test_save_atomic_keeps_the_old_file_when_a_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_atomic({"kind": "old"}, path)
    real_save = torch.save

    def dying_save(obj, fh):
        real_save(obj, fh)
        fh.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"kind": "new"}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"kind": "old"}
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(data_dir, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO))
    import main
    real_epoch = bfm.GAN_EPOCH["corrected"]
    calls = []

    def diverging(*args, **kwargs):
        calls.append(1)
        loss_g, loss_d = real_epoch(*args, **kwargs)
        return (float("nan") if len(calls) == 2 else loss_g), loss_d

    monkeypatch.setitem(bfm.GAN_EPOCH, "corrected", diverging)
    run_dir = tmp_path / "run"
    code = main.main([str(a) for a in dry_run_args(data_dir, run_dir, "--epochs_gan", 3)])
    err = [line for line in capsys.readouterr().err.splitlines() if "main.py" in line or "Traceback" in line]
    assert code == 2 and len(err) == 1 and "epoch 2" in err[0] and "gan_last.pt" in err[0]  # (tqdm bars aside)
    assert load_checkpoint(run_dir / "models" / "gan_last.pt", "gan")["epoch"] == 1
    assert not (run_dir / "results.json").exists()


@pytest.mark.parametrize("recipe", [[], ["--recipe", 'lr_decay="linear_step"']])
def test_killed_mid_gan_and_resumed_gives_the_same_results(data_dir, tmp_path, recipe):
    args = ["--data_dir", data_dir, "--epochs_target_model", 2, "--epochs_gan", 4, "--batch_size", 16,
            "--gan_batch_size", 10, "--n_eval_per_class", 5, "--seed", 5, *recipe,
            "--controls", "aux_as_labelled", "mi_face"]  # not ART's 10,000 MI-FACE steps: they resume nothing
    main_py(*args, "--run_dir", tmp_path / "straight")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-u", str(REPO / "main.py"), *map(str, args), "--run_dir", str(killed)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("gan epoch 2/"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "results.json").exists()
    assert load_checkpoint(killed / "models" / "gan_last.pt", "gan")["epoch"] >= 2
    old_place, killed = killed, killed.rename(tmp_path / "moved")  # resumed where it is now
    out = main_py("--resume", killed).stdout
    assert not old_place.exists()
    assert "resuming the GAN after epoch" in out
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["attack"] == straight["attack"]
    assert resumed["target"] == straight["target"]
    assert [h["loss_g"] for h in resumed["history"]] == [h["loss_g"] for h in straight["history"]]


@pytest.mark.parametrize("flags,fragment", [(["--controls", "nope"], "choose from"),
                                            (["--protocol", "disjoint", "--controls", "true_labels"], "--protocol same"),
                                            (["--recipe", "nope=1"], "no recipe entry"),
                                            (["--recipe", 'lr_decay="cosine"'], "linear_step"),
                                            (["--recipe", "g_average=0.99"], "docs/dead_ends.md"),
                                            (["--recipe", "surrogate_models=0"], "whole number >= 1"),
                                            (["--recipe", "surrogate_affine=15"], "[15, 0.1]"),
                                            (["--recipe", "surrogate_cutout=30"], "from 0 (none) to 28"),
                                            (["--recipe", 'generator="strokes"'], "docs/dead_ends.md"),
                                            (["--defence", "label_smoothing_neg", "--defence_strength", "0.1"], "below 0"),
                                            (["--defence_strength", "0.1"], "pick a --defence"),
                                            (["--defence", "dp_sgd", "--defence_strength", "0"], "above 0"),
                                            (["--attack", "fgsm", "--protocol", "disjoint"], "ten-digit target")])
def test_bad_protocol_and_attack_flags(tmp_path, flags, fragment):
    proc = fails("--run_dir", tmp_path / "run", *flags)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "run").exists()
