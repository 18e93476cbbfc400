"""Letters as the attacker's auxiliary images (the `letters` protocol): A-Z and a-z rendered from matplotlib's fonts.

EMNIST cannot be fetched here, so the letters are drawn from the TrueType fonts matplotlib ships
(DejaVu Sans, Serif and Mono, STIX General, Computer Modern), with random rotation, shear, scale
and stroke width, white on black and placed like MNIST: the glyph scaled into a 20x20 box and
centred by its centre of mass in 28x28. Deterministic by seed; cached under the data folder.
"""
import string
from pathlib import Path

import numpy as np
import torch

from attacklab.runtime import save_atomic

LETTERS = string.ascii_uppercase + string.ascii_lowercase
FONT_NAMES = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
              "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
              "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
              "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
              "cmr10", "cmss10", "cmti10", "cmtt10")
# Letters whose shapes are close to a digit's: what an evaluator may read as that digit.
DIGIT_LOOKALIKES = {"O": "0", "o": "0", "D": "0", "Q": "0", "I": "1", "l": "1", "i": "1", "Z": "2", "z": "2",
                    "S": "5", "s": "5", "B": "8", "b": "6", "G": "6", "g": "9", "q": "9", "A": "4", "T": "7"}
CANVAS = 96


def font_paths():
    """The TrueType files used, from matplotlib's own data folder."""
    import matplotlib
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / f"{name}.ttf" for name in FONT_NAMES]


def mnist_place(glyph):
    """A white-on-black uint8 array of any size -> 28x28: scaled into 20x20, centred by its centre of mass."""
    from PIL import Image
    ys, xs = np.nonzero(glyph > 10)
    box = glyph[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = box.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(box).resize(size, Image.LANCZOS), dtype=np.float64).clip(0, 255)
    out = np.zeros((28, 28))
    total = small.sum()
    cy = (small.sum(1) * np.arange(small.shape[0])).sum() / total
    cx = (small.sum(0) * np.arange(small.shape[1])).sum() / total
    top, left = int(round(13.5 - cy)), int(round(13.5 - cx))
    top, left = min(max(top, 0), 28 - small.shape[0]), min(max(left, 0), 28 - small.shape[1])
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out.round().astype(np.uint8)


def render(letter, font, rng):
    """One glyph, drawn with random stroke width, rotation, shear and scale, MNIST-placed (uint8 28x28)."""
    from PIL import Image, ImageDraw
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(canvas).text((CANVAS / 2, CANVAS / 2), letter, fill=255, font=font, anchor="mm",
                                stroke_width=int(rng.integers(0, 4)), stroke_fill=255)
    angle, shear = np.deg2rad(rng.uniform(-15, 15)), rng.uniform(-0.3, 0.3)
    sx, sy = rng.uniform(0.8, 1.2, size=2)
    a = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array(
        [[1, shear], [0, 1]]) @ np.diag([sx, sy])
    inv = np.linalg.inv(a)  # PIL maps output pixels back to input pixels
    c = np.array([CANVAS / 2, CANVAS / 2])
    offset = c - inv @ c
    canvas = canvas.transform((CANVAS, CANVAS), Image.AFFINE, (*inv[0], offset[0], *inv[1], offset[1]),
                              resample=Image.BILINEAR)
    return mnist_place(np.asarray(canvas))


def make_letters(n, seed):
    """(uint8 images (n, 28, 28), letter indices into LETTERS (n,)): the same for the same n and seed."""
    from PIL import ImageFont
    fonts = [ImageFont.truetype(str(p), 60) for p in font_paths()]
    rng = np.random.default_rng(seed)
    images = np.empty((n, 28, 28), dtype=np.uint8)
    which = rng.integers(0, len(LETTERS), size=n)
    for i in range(n):
        images[i] = render(LETTERS[which[i]], fonts[rng.integers(0, len(fonts))], rng)
    return torch.from_numpy(images), torch.from_numpy(which.astype(np.int64))


def load_letters(cache_dir, n, seed, log=print):
    """The letters set from its cache under cache_dir, made (about a minute for 20,000) when missing."""
    path = Path(cache_dir) / f"letters_n{n}_seed{seed}.pt"
    if path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            return cached["images"], cached["letters"]
        except Exception:
            pass  # damaged: made again below
    log(f"rendering {n} letters (seed {seed}) into {path}")
    images, letters = make_letters(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({"images": images, "letters": letters}, path)
    return images, letters
