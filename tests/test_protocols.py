"""Who holds which images, the controls' APIs, and knn_aux: the guarantees the disjoint protocol rests on."""
import pytest
import torch

import bf_mnist as bfm
from attacklab.controls import NoLeakAPI, TrueLabelAPI, aux_as_labelled, mi_face
from attacklab.metrics import nearest_distance
from attacklab.protocols import PROTOCOLS
from attacklab.runtime import UserError
from conftest import synthetic_splits

FLAGS = {"aux_split": "test", "dry_run": True}


def test_disjoint_keeps_private_and_attacker_digits_apart():
    data = synthetic_splits((4, 3, 2))
    p = PROTOCOLS["disjoint"]
    private = p.private(data)
    for split in ("train", "val", "test"):
        assert set(private[split][1].tolist()) == {0, 1, 2, 3, 4}  # no 5-9 image in the private set
    aux_images, aux_true = p.aux(data, FLAGS)
    assert set(aux_true.tolist()) == {5, 6, 7, 8, 9}  # no 0-4 image ever reaches the attacker
    assert len(aux_images) == 5 * (4 + 3 + 2)  # every 5-9 image of every split
    private_bytes = {bytes(x.numpy()) for s in private.values() for x in s[0]}
    assert not private_bytes & {bytes(x.numpy()) for x in aux_images}
    assert p.n_classes == 5


def test_same_is_the_articles_setting():
    data = synthetic_splits((2, 2, 2))
    p = PROTOCOLS["same"]
    assert p.n_classes == 10 and torch.equal(p.aux(data, FLAGS)[0], data["test"][0])
    assert torch.equal(p.private(data)["train"][0], data["train"][0])


def test_the_disjoint_target_has_five_outputs():
    assert bfm.TargetModel(n_classes=5)(torch.rand(3, 1, 28, 28)).shape == (3, 5)


def test_the_no_leak_api_answers_a_fixed_function_of_the_image_only():
    x = torch.rand(40, 1, 28, 28)
    a, b = NoLeakAPI(5), NoLeakAPI(5)
    first, again = a(x), b(x.clone())
    assert torch.equal(first, again) and first.min() >= 0 and first.max() < 5  # deterministic, no target involved
    assert len(set(first.tolist())) > 1 and a.queries == 40
    assert not torch.equal(a(torch.rand(40, 1, 28, 28)), first)
    probs = NoLeakAPI(5, output="probs")(x)
    assert torch.equal(probs.argmax(1), first) and torch.equal(probs.sum(1), torch.ones(40))


def test_the_budget_is_enforced_for_the_controls_too():
    api = NoLeakAPI(5, budget=10)
    api(torch.rand(10, 1, 28, 28))
    with pytest.raises(UserError, match="--query_budget"):
        api(torch.rand(1, 1, 28, 28))


def test_the_true_label_api_answers_the_aux_images_only():
    images, labels = synthetic_splits((1, 1, 1))["test"]
    api = TrueLabelAPI(images, labels)
    assert torch.equal(api(images.unsqueeze(1).float() / 255), labels)
    with pytest.raises(UserError, match="true_labels"):
        api(torch.rand(2, 1, 28, 28))


def test_knn_aux_on_known_inputs():
    ref = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    gen = torch.tensor([[1.0, 0.0], [10.0, 2.0], [0.0, 0.0]])
    # nearest squared distances: 1, 4, 0
    assert nearest_distance(gen, ref) == pytest.approx(5 / 3)
    assert nearest_distance(gen, ref, chunk=1) == pytest.approx(5 / 3)


def test_aux_as_labelled_takes_the_apis_classes():
    images, _ = synthetic_splits((1, 1, 3))["test"]
    api_labels = torch.arange(len(images)) % 5
    x, req = aux_as_labelled(images, api_labels, per_class=2, k=5)
    assert len(x) == 10 and torch.equal(req.bincount(), torch.full((5,), 2))


def test_mi_face_raises_the_class_probability_of_a_fixed_model():
    torch.manual_seed(0)
    target = bfm.TargetModel(base_channel=4, n_classes=5).eval()
    requested = torch.arange(5)
    x = mi_face(target, requested, max_iter=50, learning_rate=0.1)
    p0 = torch.softmax(target(torch.zeros(5, 1, 28, 28)), 1)[torch.arange(5), requested]
    p = torch.softmax(target(x), 1)[torch.arange(5), requested]
    assert (p > p0).all() and x.min() >= 0 and x.max() <= 1


def test_controls_that_cannot_run_are_refused_in_one_sentence():
    from attacklab.controls import validate_controls
    validate_controls(["no_leak", "mi_face"], "disjoint", "blog")  # the no-leak API answers any image
    for names, protocol, variant, fragment in ((["true_labels"], "disjoint", "corrected", "--protocol same"),
                                               (["true_labels"], "same", "blog", "blog"),
                                               (["nope"], "same", "corrected", "choose from")):
        with pytest.raises(UserError, match=fragment):
            validate_controls(names, protocol, variant)
