"""MI-FACE with ART's stopping rule equals ART's own MIFace (adversarial-robustness-toolbox) on a small model."""
import numpy as np
import torch
from art.attacks.inference.model_inversion import MIFace
from art.estimators.classification import PyTorchClassifier

import bf_mnist as bfm
from attacklab.controls import mi_face


def small_target():
    """A 4-class TargetModel whose classes start at p = 0.9, 0.1, 0.005, 0.0001 at the zero image."""
    torch.manual_seed(0)
    model = bfm.TargetModel(base_channel=4, n_classes=4).eval()
    with torch.no_grad():
        model.main[-1].weight.mul_(30)
        model.main[-1].bias.zero_()
        zero_logits = model(torch.zeros(1, 1, 28, 28))[0]
        model.main[-1].bias.sub_(zero_logits).add_(torch.log(torch.tensor([0.9, 0.1, 0.005, 0.0001])))
    return model


def art_mi_face(model, max_iter, window):
    """ART's MIFace at its defaults but for max_iter and window; the target wrapped so it outputs p."""
    net = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    clf = PyTorchClassifier(net, loss=torch.nn.NLLLoss(), input_shape=(1, 28, 28), nb_classes=4, clip_values=(0.0, 1.0))
    attack = MIFace(clf, max_iter=max_iter, window_length=window, verbose=False)
    return torch.from_numpy(attack.infer(None, np.arange(4)))


def test_the_art_rule_reproduces_arts_mi_face():
    model = small_target()
    p0 = torch.softmax(model(torch.zeros(1, 1, 28, 28)), 1)[0]
    assert p0[0] > 0.5 and p0[2] < 0.01 and p0[3] < 0.01  # two classes climb, two stop at once under ART's rule
    theirs = art_mi_face(model, max_iter=100, window=10)
    ours = mi_face(model, torch.arange(4), max_iter=100, window=10, rule="art")
    scale = theirs.abs().amax((1, 2, 3))
    assert (scale > 0).all()
    assert ((ours - theirs).abs().amax((1, 2, 3)) <= 1e-4 * scale + 1e-6).all()
    p = torch.softmax(model(ours), 1)[torch.arange(4), torch.arange(4)]
    assert p[1] > p0[1] and torch.allclose(p[2:], p0[2:], rtol=0.5)  # one step of a tiny gradient changes little
    # the project's own rule stops where ART's goes on: not the same images
    fredrikson = mi_face(model, torch.arange(4), max_iter=100, window=10, rule="fredrikson")
    assert (fredrikson - ours).abs().amax() > 1e-3
