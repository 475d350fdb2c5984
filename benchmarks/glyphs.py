"""Glyphs: a generated 10-class digit data set of real scale (150,000 train + 10,000 test, 28x28 grey), as MNIST files.

Digits come from two sources: the 22 matplotlib-bundled fonts that draw 0-9 (DejaVu, STIX,
Computer Modern; always installed with matplotlib, so no system font is needed), each at three
stroke widths, and scikit-learn's 1,797 bundled 8x8 handwritten digits upscaled. Every image is
one template under a random affine map (rotation, scale, aspect, shear, translation), a smooth
elastic warp, thinner or bolder strokes, a fragment of another digit at the edge and 0-3 clutter
strokes, blur, uneven background and contrast, and pixel noise. All of it is torch-vectorised
and seeded per chunk of 256 images, one thread each (so the bytes depend neither on the core
count nor on the number of worker processes, two by default): the same seed gives the same files
on the same library versions. Unlike torchvision's FakeData it can be learned, and
it is hard enough that configurations differ by points, not by a val image.

The files are written where `torchvision.datasets.MNIST` reads them (`ROOT/MNIST/raw/
train-images-idx3-ubyte` ..., uncompressed IDX) with a manifest (`glyphs.json`: parameters,
sizes, SHA-256), so a spec loads them as `dataset: {name: mnist, root: ROOT, download: false}`.
Existing files whose manifest, sizes and checksums match are reused.

    python benchmarks/glyphs.py [--root DIR] [--seed 0] [--train 150000] [--test 10000] [--show FILE.png] [--time-epoch]

`--time-epoch` trains one epoch of the two-block `cnn` (channels 16-32, hidden 64, batch 64,
Adam, one thread) on the train split a search sees (145,000 images: 5,000 are held out for val)
and writes `benchmarks/results/glyphs.md` with its wall and CPU time. The data set must take
>= 20 s per epoch per core: on this project's 2-core AMD EPYC that net trains 55,000 28x28 images
in about 11 s, hence 2.5x MNIST's training images (more images rather than larger ones: the
shape stays MNIST's): 145,000 take 26-27 s (benchmarks/results/glyphs.md). `--show FILE.png` writes
a sheet of the first train images of each class; the committed one is
`benchmarks/results/runs/glyphs/glyphs_examples.png`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import time
from pathlib import Path
from typing import Any

import _common as C  # noqa: F401 - puts the repository on sys.path (trainables, search)
import numpy as np

GENERATOR = "hpsearch-glyphs/1"  # bump when the images change: a cached set of another version is regenerated
SIZE = 28  # output side (pixels)
CANVAS = 64  # template side: a digit's longer side is GLYPH px of it
GLYPH = 44
WORK = 56  # images are warped at 2x and averaged down to SIZE (anti-aliasing)
CHUNK = 256  # images per vectorised step (larger chunks page-fault on every big tensor: 3x slower)
TRAIN, TEST = 150_000, 10_000  # images generated per split
VAL_IMAGES = 5000  # held out of the train split for validation (spec_dataset)
FILES = {  # MNIST's file names (torchvision reads them uncompressed from MNIST/raw/)
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
MANIFEST = "glyphs.json"
SYMBOL_FONTS = ("cmex10", "cmsy10")  # map 0-9 to symbols, not digits
FONT_SHARE = 0.6  # fraction of images drawn from a font template (the rest: scikit-learn's handwritten digits)
STROKES = (0, 1, 2)  # PIL stroke widths (px at font size) of the font templates


def default_root() -> Path:
    """~/.cache/hpsearch/glyphs (or $HPSEARCH_CACHE/glyphs)."""
    from trainables.data import cache_dir

    return cache_dir() / "glyphs"


def raw_folder(root: str | Path) -> Path:
    return Path(root).expanduser() / "MNIST" / "raw"


# ----------------------------------------------------------------------------------------------
# Templates


def font_files() -> list[Path]:
    """matplotlib's bundled TrueType fonts that draw ten distinct, non-empty digits."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    folder = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    usable = []
    for path in sorted(folder.glob("*.ttf")):
        if path.stem in SYMBOL_FONTS:
            continue
        font = ImageFont.truetype(str(path), 40)
        digits = []
        for ch in "0123456789":
            im = Image.new("L", (CANVAS, CANVAS))
            ImageDraw.Draw(im).text((CANVAS // 2, CANVAS // 2), ch, fill=255, font=font, anchor="mm")
            digits.append(np.asarray(im, np.float32) / 255.0)
        ink = min(d.sum() for d in digits)
        distinct = min(np.abs(digits[i] - digits[j]).sum() for i in range(10) for j in range(i + 1, 10))
        if ink > 50 and distinct > 30:  # no glyphs (STIXSiz*, Display), or one box for every digit (LastResort)
            usable.append(path)
    return usable


def _fit_to_canvas(ink: np.ndarray) -> np.ndarray:
    """Crop a float image to its ink, scale its longer side to GLYPH px and centre it on a CANVAS x CANVAS field."""
    from PIL import Image

    ys, xs = np.nonzero(ink > 0.05)
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    scale = GLYPH / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((nw, nh), Image.BICUBIC), np.float32) / 255.0
    out = np.zeros((CANVAS, CANVAS), np.float32)
    top, left = (CANVAS - nh) // 2, (CANVAS - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def font_templates() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(templates (K, 64, 64) float in [0, 1], labels (K,), font names): every usable font x digit x stroke width."""
    from PIL import Image, ImageDraw, ImageFont

    images, labels = [], []
    fonts = font_files()
    for path in fonts:
        font = ImageFont.truetype(str(path), 96)
        for digit in range(10):
            for stroke in STROKES:
                im = Image.new("L", (192, 192))
                ImageDraw.Draw(im).text((96, 96), str(digit), fill=255, font=font, anchor="mm", stroke_width=stroke * 2, stroke_fill=255)
                images.append(_fit_to_canvas(np.asarray(im, np.float32) / 255.0))
                labels.append(digit)
    return np.stack(images), np.asarray(labels, np.int64), [p.stem for p in fonts]


def handwritten_templates() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 handwritten digits, upscaled to templates (contrast-stretched: 8x8 blurs strokes)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    out = []
    for image in raw.images:
        x = np.clip(image / 16.0, 0, 1).astype(np.float32)
        x = _fit_to_canvas(x)
        out.append(np.clip((x - 0.25) / 0.5, 0, 1))  # sharpen the upscaled blob into strokes
    return np.stack(out), raw.target.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Rendering


def _pick(labels_wanted: Any, pool_labels: np.ndarray, u: Any) -> Any:
    """For each wanted class, one index into a pool sorted by class (u in [0, 1) chooses which)."""
    import torch

    counts = torch.from_numpy(np.bincount(pool_labels, minlength=10))
    offsets = torch.cumsum(counts, 0) - counts
    within = torch.minimum((u * counts[labels_wanted]).long(), counts[labels_wanted] - 1)  # u * count can round up to count
    return offsets[labels_wanted] + within


def _affine(n: int, g: Any, *, rotation_deg: float, scale: tuple[float, float], shear: float, shift: float) -> Any:
    """(n, 2, 3) output->input maps of random rotations, scales, aspects, shears and shifts (normalised coordinates)."""
    import torch

    def u(lo: float, hi: float) -> Any:
        return lo + (hi - lo) * torch.rand(n, generator=g)

    rot = torch.clamp(torch.randn(n, generator=g) * rotation_deg / 2, -rotation_deg, rotation_deg) * math.pi / 180
    s = u(*scale)
    aspect = torch.exp(u(-0.2, 0.2))
    sh = u(-shear, shear)
    cos, sin = torch.cos(rot), torch.sin(rot)
    # A = R(rot) @ [[1, sh], [0, 1]] @ diag(s * aspect, s / aspect)
    sx, sy = s * aspect, s / aspect
    a00, a01 = cos * sx, (cos * sh - sin) * sy
    a10, a11 = sin * sx, (sin * sh + cos) * sy
    theta = torch.stack([torch.stack([a00, a01, u(-shift, shift)], 1), torch.stack([a10, a11, u(-shift, shift)], 1)], 1)
    return theta


def _strokes(n: int, g: Any, side: int) -> Any:
    """(n, 1, side, side) images of 0-3 short anti-aliased line segments each (clutter)."""
    import torch

    lines = 3
    coords = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    p = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)  # (P, 2)
    start = torch.rand(n, lines, 2, generator=g) * 2.2 - 1.1
    angle = torch.rand(n, lines, generator=g) * 2 * math.pi
    length = 0.2 + 0.6 * torch.rand(n, lines, generator=g)
    end = start + length[..., None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    width = (0.04 + 0.08 * torch.rand(n, lines, generator=g))[..., None]
    ink = (0.3 + 0.7 * torch.rand(n, lines, generator=g))[..., None]
    shown = (torch.arange(lines)[None, :] < torch.randint(0, lines + 1, (n, 1), generator=g)).float()[..., None]
    d = end - start  # (n, L, 2)
    t = ((p[None, None] - start[:, :, None]) * d[:, :, None]).sum(-1) / (d * d).sum(-1, keepdim=True).clamp(min=1e-6)
    nearest = start[:, :, None] + t.clamp(0, 1)[..., None] * d[:, :, None]
    dist = (p[None, None] - nearest).norm(dim=-1)  # (n, L, P)
    value = (ink * shown * (1 - dist / width).clamp(min=0)).amax(1)
    return value.reshape(n, 1, side, side)


def _gaussian_blur(x: Any, sigma: float) -> Any:
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return x
    radius = max(1, math.ceil(2.5 * sigma))
    k = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2) / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))


def _grid(theta: Any, side: int) -> Any:
    """`F.affine_grid(theta, [n, 1, side, side], align_corners=False)` as elementwise maths (its bmm is slow on CPU)."""
    import torch

    c = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    x, y = c.view(1, 1, -1), c.view(1, -1, 1)
    t = theta[:, :, :, None, None]
    return torch.stack([t[:, 0, 0] * x + t[:, 0, 1] * y + t[:, 0, 2], t[:, 1, 0] * x + t[:, 1, 1] * y + t[:, 1, 2]], -1)


def _dilate(x: Any) -> Any:
    """Grey-level 3x3 dilation (max of the nine shifts; cheaper than max_pool2d on CPU)."""
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))
    out = x
    for dy in range(3):
        for dx in range(3):
            if dy != 1 or dx != 1:
                out = torch.maximum(out, p[..., dy : dy + h, dx : dx + w])
    return out


def _per_sample(x: Any, which: Any, ops: list[Any]) -> Any:
    """x with ops[k] applied to the samples where which == k (ops[k] None: unchanged)."""
    out = x.clone()
    for k, op in enumerate(ops):
        mask = which == k
        if op is not None and bool(mask.any()):
            out[mask] = op(x[mask])
    return out


def render(n: int, g: Any, templates: Any, labels_of: Any, is_font: Any) -> tuple[np.ndarray, np.ndarray]:
    """n images (uint8 (n, 28, 28)) and labels drawn from `templates` (K, 1, 64, 64), using torch generator `g`.

    `templates` are sorted by (source, class): `labels_of` their digits, `is_font` whether each is a font's.
    """
    import torch
    import torch.nn.functional as F

    font_y, hand_y = labels_of[is_font].numpy(), labels_of[~is_font].numpy()
    n_font = len(font_y)
    labels = torch.randint(0, 10, (n,), generator=g)
    from_font = torch.rand(n, generator=g) < FONT_SHARE
    fi = _pick(labels, font_y, torch.rand(n, generator=g))
    hi = n_font + _pick(labels, hand_y, torch.rand(n, generator=g))
    source = templates[torch.where(from_font, fi, hi)]

    # The digit: affine + elastic warp, sampled at WORK x WORK.
    theta = _affine(n, g, rotation_deg=30.0, scale=(0.85, 1.3), shear=0.35, shift=0.15)
    warp = torch.randn(n, 2, 4, 4, generator=g) * (0.08 * torch.rand(n, 1, 1, 1, generator=g))
    grid = _grid(theta, WORK) + F.interpolate(warp, size=(WORK, WORK), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    digit = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # Thinner or bolder strokes (grey-level erosion / dilation at 2x): 25 % bolder, 10 % much bolder, 15 % thinner.
    stroke = torch.bucketize(torch.rand(n, generator=g), torch.tensor([0.25, 0.35, 0.5]))
    digit = _per_sample(digit, stroke, [_dilate, lambda x: _dilate(_dilate(x)), lambda x: -_dilate(-x), None])

    # Half the images: a fragment of another digit (any class, any source) pushed to the edge, fainter.
    other = templates[torch.randint(0, len(templates), (n,), generator=g)]
    theta_o = _affine(n, g, rotation_deg=40.0, scale=(0.8, 1.2), shear=0.3, shift=0.0)
    direction = torch.rand(n, generator=g) * 2 * math.pi
    reach = 0.85 + 0.35 * torch.rand(n, generator=g)
    theta_o[:, 0, 2], theta_o[:, 1, 2] = reach * torch.cos(direction), reach * torch.sin(direction)
    fragment = F.grid_sample(other, _grid(theta_o, WORK), align_corners=False)
    has_fragment = (torch.rand(n, 1, 1, 1, generator=g) < 0.5).float()
    fragment = fragment * has_fragment * (0.3 + 0.5 * torch.rand(n, 1, 1, 1, generator=g))

    x = F.avg_pool2d(torch.maximum(digit, fragment), 2)  # WORK -> SIZE
    x = torch.maximum(x, _strokes(n, g, SIZE))

    # Blur: one of four strengths per image.
    level = torch.randint(0, 4, (n,), generator=g)
    x = _per_sample(x, level, [None, *(lambda v, s=s: _gaussian_blur(v, s) for s in (0.5, 0.8, 1.1))])

    # Contrast, uneven background, noise.
    coords = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE * 2 - 1
    gx = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.3
    gy = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.3
    background = (0.25 * torch.rand(n, 1, 1, 1, generator=g) + gx * coords.view(1, 1, 1, -1) + gy * coords.view(1, 1, -1, 1)).clamp(0, 1)
    contrast = 0.55 + 0.45 * torch.rand(n, 1, 1, 1, generator=g)
    x = background + (1 - background) * contrast * x
    x = x + torch.randn(x.shape, generator=g) * (0.02 + 0.18 * torch.rand(n, 1, 1, 1, generator=g))
    speckle = torch.rand(x.shape, generator=g) < 0.03 * torch.rand(n, 1, 1, 1, generator=g)
    x = torch.where(speckle, torch.rand(x.shape, generator=g), x)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0]
    return images.numpy(), labels.numpy().astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Files


def _idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX file (MNIST's format): magic 0x0000080N, big-endian dims, uint8 data."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _params(seed: int, n_train: int, n_test: int) -> dict[str, Any]:
    return {"generator": GENERATOR, "seed": seed, "train": n_train, "test": n_test, "size": SIZE}


def cached(root: str | Path, seed: int = 0, n_train: int = TRAIN, n_test: int = TEST) -> dict[str, Any] | None:
    """The manifest of a matching generated set under `root` (files present, sizes and SHA-256 as recorded), or None."""
    folder = raw_folder(root)
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if manifest.get("params") != _params(seed, n_train, n_test):
        return None
    for name, entry in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file() or file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
            return None
    return manifest if len(manifest.get("files", {})) == len(FILES) else None


_POOL: tuple[Any, Any, Any] | None = None  # (templates, labels, is_font) of this process, built once (_templates)


def _templates() -> tuple[Any, Any, Any]:
    """Every template as one tensor sorted by (source, class), its digits, and whether each is a font's."""
    global _POOL
    if _POOL is None:
        import torch

        f_t, f_y, _ = font_templates()
        h_t, h_y = handwritten_templates()
        order_f, order_h = np.argsort(f_y, kind="stable"), np.argsort(h_y, kind="stable")
        templates = torch.from_numpy(np.concatenate([f_t[order_f], h_t[order_h]])[:, None])
        labels_of = torch.from_numpy(np.concatenate([f_y[order_f], h_y[order_h]]))
        _POOL = (templates, labels_of, torch.arange(len(labels_of)) < len(f_y))
    return _POOL


def _use_templates(pool: tuple[Any, Any, Any]) -> None:
    """Worker initializer: the parent's templates (rendering them again in every worker costs more than sending them)."""
    global _POOL
    _POOL = pool


def _render_chunk(seed: int, split: int, chunk: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk `chunk` of split `split` (0 train, 1 test): its own generator, so the bytes do not depend on the worker count."""
    import torch

    torch.set_num_threads(1)  # the same bytes whatever the core count
    g = torch.Generator().manual_seed(seed * 1_000_000 + split * 100_000 + chunk)
    return render(n, g, *_templates())


def generate(root: str | Path | None = None, *, seed: int = 0, n_train: int = TRAIN, n_test: int = TEST, force: bool = False,
             workers: int | None = None) -> dict[str, Any]:
    """Write (or reuse) the data set under `root` and return its manifest (with `root`); `workers` processes render it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from filelock import FileLock

    root = Path(root).expanduser() if root is not None else default_root()
    folder = raw_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".glyphs.lock")):
        manifest = None if force else cached(root, seed, n_train, n_test)
        if manifest is not None:
            return {**manifest, "root": str(root), "reused": True}
        started = time.perf_counter()
        jobs = [(seed, split, c, min(CHUNK, n - start)) for split, n in ((0, n_train), (1, n_test)) for c, start in enumerate(range(0, n, CHUNK))]
        workers = workers or min(2, os.cpu_count() or 1)
        if workers > 1 and len(jobs) > 8:
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_use_templates, initargs=(_templates(),)) as pool:
                chunks = list(pool.map(_render_chunk, *zip(*jobs), chunksize=8))
        else:
            chunks = [_render_chunk(*job) for job in jobs]
        out: dict[str, np.ndarray] = {}
        for split, name in ((0, "train"), (1, "test")):
            mine = [c for job, c in zip(jobs, chunks) if job[1] == split]
            out[f"{name}_images"] = np.concatenate([x for x, _ in mine])
            out[f"{name}_labels"] = np.concatenate([y for _, y in mine])
        files = {}
        for key, name in FILES.items():
            target = folder / name
            tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
            tmp.write_bytes(_idx_bytes(out[key]))
            os.replace(tmp, target)
            files[name] = {"bytes": target.stat().st_size, "sha256": _sha256(target)}
        _, labels_of, is_font = _templates()
        manifest = {
            "params": _params(seed, n_train, n_test), "files": files, "fonts": [p.stem for p in font_files()],
            "templates": {"font": int(is_font.sum()), "handwritten": int((~is_font).sum())},
            "generation_seconds": round(time.perf_counter() - started, 1), "workers": workers,
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return {**manifest, "root": str(root), "reused": False}


def spec_dataset(root: str | Path, n_train: int = TRAIN) -> dict[str, Any]:
    """The spec's `dataset` mapping that loads the set: MNIST's loader, VAL_IMAGES held out of train (a fifth of a small set)."""
    return {"name": "mnist", "root": str(root), "download": False, "val_fraction": VAL_IMAGES / n_train if n_train > 4 * VAL_IMAGES else 0.2}


def with_label_noise(manifest: dict[str, Any], rate: float, seed: int) -> dict[str, Any]:
    """A copy of a generated set whose *training* labels are wrong for a `rate` share of the images (each such label
    moved to one of the 9 other classes at random, seeded); the test labels stay clean. The copy sits beside the
    source (ROOT-noise<rate>), its images hard-linked; a matching copy is reused. Returns the copy's manifest (with
    `label_noise`). Val is held out of the noisy training split, so a search selects on noisy val labels, as a user
    whose labels are noisy does; test accuracy is on clean labels."""
    import shutil

    src = raw_folder(manifest["root"])
    root = Path(f"{manifest['root']}-noise{rate:g}-s{seed}")
    dst = raw_folder(root)
    marker = dst / "label_noise.json"
    wanted = {"rate": rate, "seed": seed, "source": data_sha(manifest)}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return {**manifest, "root": str(root), "label_noise": wanted, "reused": True}
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        if name != FILES["train_labels"]:
            target = dst / name
            target.unlink(missing_ok=True)
            try:
                os.link(src / name, target)
            except OSError:
                shutil.copyfile(src / name, target)
    raw = (src / FILES["train_labels"]).read_bytes()
    labels = np.frombuffer(raw[8:], dtype=np.uint8).copy()
    rng = np.random.default_rng(seed)
    flip = rng.random(len(labels)) < rate
    labels[flip] = (labels[flip] + rng.integers(1, 10, int(flip.sum()))) % 10
    (dst / FILES["train_labels"]).write_bytes(_idx_bytes(labels))
    marker.write_text(json.dumps(wanted))
    return {**manifest, "root": str(root), "label_noise": {**wanted, "flipped": int(flip.sum())}, "reused": False}


def data_sha(manifest: dict[str, Any]) -> str:
    """One short fingerprint of the four files (for reports)."""
    return hashlib.sha256("".join(manifest["files"][n]["sha256"] for n in sorted(manifest["files"])).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Checks: a picture, and the time of one epoch


def save_grid(root: str | Path, path: str | Path, rows: int = 10, cols: int = 16) -> Path:
    """A PNG of the first train images of each class (one row per class)."""
    from PIL import Image

    folder = raw_folder(root)
    raw = (folder / FILES["train_images"]).read_bytes()
    n = struct.unpack(">I", raw[4:8])[0]
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(n, SIZE, SIZE)
    labels = np.frombuffer((folder / FILES["train_labels"]).read_bytes(), np.uint8, offset=8)
    sheet = np.zeros((rows * SIZE, cols * SIZE), np.uint8)
    for r in range(rows):
        idx = np.flatnonzero(labels == r % 10)[:cols]
        for c, i in enumerate(idx):
            sheet[r * SIZE : (r + 1) * SIZE, c * SIZE : (c + 1) * SIZE] = images[i]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).resize((cols * SIZE * 2, rows * SIZE * 2), Image.NEAREST).save(path)
    return Path(path)


def time_epoch(root: str | Path, n_train: int = TRAIN) -> dict[str, Any]:
    """Seconds of one training epoch (train split only, then the val pass) of the two-block cnn, batch 64, one thread."""
    from search.spec import parse_spec
    from trainables.data import create_dataset
    from trainables.train import Trainer

    raw = C.quickstart_raw()
    raw.update(name="glyphs-epoch", dataset=spec_dataset(root, n_train))
    raw["baseline"].update(batch_size=64, channels="16-32", hidden=64)
    raw["budget"] = {**raw["budget"], "max_epochs": 1, "grace_period": 1}
    spec = parse_spec(raw, "benchmarks/glyphs.py")
    data = create_dataset(spec.dataset, **spec.dataset_options)
    trainer = Trainer(spec.baseline, data, spec.settings())  # threads = resources.cpu = 1
    started, cpu_started = time.perf_counter(), time.process_time()
    metrics = trainer.run_round()
    total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    val_started, val_cpu_started = time.perf_counter(), time.process_time()
    trainer.evaluate(trainer.val_loader)
    val_seconds, val_cpu = time.perf_counter() - val_started, time.process_time() - val_cpu_started
    trainer.close()
    return {"train_images": len(data.train), "val_images": len(data.val), "round_seconds": total, "round_cpu_seconds": cpu,
            "train_seconds": total - val_seconds, "train_cpu_seconds": cpu - val_cpu, "val_seconds": val_seconds,
            "val_acc": metrics["val_acc"], "summary": data.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root (default: ~/.cache/hpsearch/glyphs); files go to ROOT/MNIST/raw/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=TRAIN, help="training images (a search holds 5,000 of them out for val)")
    parser.add_argument("--test", type=int, default=TEST)
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching set exists")
    parser.add_argument("--workers", type=int, default=None, help="processes that render the images (default: 2, or 1 on one core)")
    parser.add_argument("--show", default=None, metavar="FILE.png",
                        help="write a sheet of train images per class (the committed one: benchmarks/results/runs/glyphs/glyphs_examples.png)")
    parser.add_argument("--time-epoch", action="store_true", help="time one epoch of the two-block cnn and write OUT/glyphs.md")
    parser.add_argument("--out", default=str(C.RESULTS), help="folder for glyphs.md (with --time-epoch)")
    args = parser.parse_args()
    manifest = generate(args.root, seed=args.seed, n_train=args.train, n_test=args.test, force=args.force, workers=args.workers)
    how = "reused" if manifest["reused"] else f"generated in {manifest['generation_seconds']} s"
    print(f"glyphs {args.train} train + {args.test} test under {raw_folder(manifest['root'])} ({how}); "
          f"{len(manifest['fonts'])} fonts, {manifest['templates']['font']} font + {manifest['templates']['handwritten']} handwritten templates; "
          f"sha {data_sha(manifest)}")
    if args.show:
        print(f"wrote {save_grid(manifest['root'], args.show)}")
    if args.time_epoch:
        with C.LoadWatch() as load:
            timing = time_epoch(manifest["root"], args.train)
        table = C.md_table(["measure", "value"], [
            ["data", timing["summary"]],
            ["data files (sha256 of the four, short)", data_sha(manifest)],
            [f"generation seconds (when generated, {manifest.get('workers', 1)} processes)", f"{manifest['generation_seconds']:.1f}"],
            [f"one epoch ({timing['train_images']:,} images), two-block cnn 16-32, hidden 64, batch 64, Adam, 1 thread: train seconds "
             "(wall / CPU of this process)", f"{timing['train_seconds']:.1f} / {timing['train_cpu_seconds']:.1f}"],
            [f"the val pass after it ({timing['val_images']:,} images), seconds", f"{timing['val_seconds']:.1f}"],
            ["whole round (train + val), seconds (wall / CPU)", f"{timing['round_seconds']:.1f} / {timing['round_cpu_seconds']:.1f}"],
            ["val acc after that one epoch", f"{timing['val_acc']:.4f}"],
            ["target: one epoch >= 20 s per core (the CPU seconds of the epoch's training: what one core spends, whatever "
             "else runs on the machine)", "met" if timing["train_cpu_seconds"] >= 20 else "**missed**"],
        ])
        intro = (f"`benchmarks/glyphs.py`: the data set of `benchmarks/anytime.py`. Seed {args.seed}; "
                 f"fonts: {', '.join(manifest['fonts'])}. One epoch timed with `--time-epoch` (the val pass is timed again separately).")
        C.write_report("glyphs", "Glyphs data set: one epoch of the two-block CNN", [intro, table], args.out, smoke=False, load=load)


if __name__ == "__main__":
    main()
