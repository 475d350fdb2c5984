"""Helpers shared by the trainables tests: tiny on-disk data sets and hyperparameters.

Everything is generated with numpy / PIL in a temporary folder, so the tests
run offline and fast. Generated images are distinct (random pixels), which lets
tests check that train / val / test never share a sample.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "spaces"

# ---------------------------------------------------------------------------------------------
# Hyperparameters


def quickstart_baseline() -> dict[str, Any]:
    """The quickstart spec's baseline (every training and cnn hyperparameter)."""
    return dict(yaml.safe_load((SPACES / "quickstart.yaml").read_text())["baseline"])


def tiny_cnn_hparams(**overrides: Any) -> dict[str, Any]:
    """A full, fast configuration: the quickstart baseline with a very small cnn."""
    hp = quickstart_baseline()
    hp.update(channels="4-8", hidden=16, batch_size=32)
    hp.update(overrides)
    return hp


# ---------------------------------------------------------------------------------------------
# MNIST-style IDX files (what torchvision.datasets.MNIST / FashionMNIST read from <root>/<Class>/raw)

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """An idx3-ubyte file: magic 0x00000803 (ubyte, 3 dims), big-endian dims, then pixels."""
    assert images.dtype == np.uint8 and images.ndim == 3
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x0803, n, h, w) + images.tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """An idx1-ubyte file: magic 0x00000801 (ubyte, 1 dim), big-endian count, then labels."""
    labels = np.asarray(labels, dtype=np.uint8)
    path.write_bytes(struct.pack(">II", 0x0801, len(labels)) + labels.tobytes())


def write_mnist_like(root: Path, class_folder: str = "MNIST", n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28x28 digits with balanced labels in `root/<class_folder>/raw`; returns the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / class_folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": np.arange(n_train, dtype=np.uint8) % 10,
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": np.arange(n_test, dtype=np.uint8) % 10,
    }
    write_idx_images(raw / MNIST_FILES[0], out["train_x"])
    write_idx_labels(raw / MNIST_FILES[1], out["train_y"])
    write_idx_images(raw / MNIST_FILES[2], out["test_x"])
    write_idx_labels(raw / MNIST_FILES[3], out["test_y"])
    return out


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python batches (<root>/cifar-10-batches-py)

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Five train batches + test_batch + batches.meta, in the official pickled format."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in (np.arange(per_batch) + b) % 10]
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {b} of 5", "data": x, "labels": y}, f)
        xs.append(x)
        ys.append(y)
    test_x = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_y = [int(v) for v in np.arange(n_test) % 10]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "data": test_x, "labels": test_y}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return {
        "train_x": np.concatenate(xs).reshape(-1, 3, 32, 32),
        "train_y": np.concatenate([np.asarray(y) for y in ys]),
        "test_x": test_x.reshape(-1, 3, 32, 32),
        "test_y": np.asarray(test_y),
    }



def trust_generated_cifar10(monkeypatch: Any, root: Path) -> None:
    """Make torchvision's CIFAR10 accept the batches `write_cifar10` wrote under `root` (if any): it checks
    every file against the official MD5s, which generated files cannot match. The parsing stays torchvision's."""
    import hashlib

    import torchvision.datasets as tvd

    folder = Path(root) / tvd.CIFAR10.base_folder
    if not (folder / "batches.meta").is_file():
        return

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[name, md5(name)] for name, _ in tvd.CIFAR10.train_list])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [[name, md5(name)] for name, _ in tvd.CIFAR10.test_list])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5(tvd.CIFAR10.meta["filename"])})

# ---------------------------------------------------------------------------------------------
# Image folders

MODES = ("RGB", "L", "P", "RGBA")
SIZES = ((20, 30), (40, 40), (17, 23), (33, 21))  # (width, height)


def write_image(path: Path, mode: str, size: tuple[int, int], seed: int) -> None:
    """A random image of `mode` and `size` (w, h); PNG unless the name ends in .jpg."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "L":
        image = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
    elif mode == "RGBA":
        image = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), mode="RGBA")
    else:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")
        if mode == "P":
            image = image.quantize(colors=16)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_corrupt(path: Path, seed: int = 0) -> None:
    """Random bytes under an image name (a broken download)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 2048, dtype=np.uint8).tobytes())


def fill_class(folder: Path, n: int, seed: int) -> list[Path]:
    """`n` valid images of mixed modes, sizes and formats (PNG and JPEG) in `folder`."""
    written = []
    for i in range(n):
        mode = MODES[i % len(MODES)]
        ext = ".jpg" if mode in ("RGB", "L") and (i // len(MODES)) % 2 == 0 else ".png"
        path = folder / f"img{i:03d}{ext}"
        write_image(path, mode, SIZES[i % len(SIZES)], seed * 1000 + i)
        written.append(path)
    return written


def make_class_layout(root: Path, classes: tuple[str, ...] = ("cats", "dogs", "pandas"), per_class: int = 10) -> dict[str, Any]:
    """root/<class>/* with one corrupt .jpg and one .txt among the images (tutorial A)."""
    valid = []
    for c, name in enumerate(classes):
        valid += fill_class(root / name, per_class, seed=c + 1)
    bad = [root / classes[0] / "broken.jpg", root / classes[-1] / "notes.txt"]
    write_corrupt(bad[0])
    bad[1].write_text("not an image\n")
    return {"valid": valid, "bad": bad, "classes": list(classes)}


def make_split_layout(root: Path, per_class: int = 6) -> dict[str, Any]:
    """root/Train|Validation|Test (tutorial D): classes in mixed case, unlabelled Test files."""
    classes = ["beagle", "corgi", "pug"]
    valid_train = []
    for c, name in enumerate(classes):
        valid_train += fill_class(root / "Train" / name, per_class, seed=10 + c)
    valid_val = []
    for c, name in enumerate(["BEAGLE", "Corgi", "pug"]):  # class names match case-insensitively
        valid_val += fill_class(root / "Validation" / name, 3, seed=20 + c)
    valid_test = fill_class(root / "Test", 5, seed=30)  # no class sub-folders: unlabelled
    bad = [root / "Train" / "corgi" / "broken.jpg", root / "Test" / "readme.txt"]
    write_corrupt(bad[0], seed=1)
    bad[1].write_text("predict these\n")
    return {"classes": classes, "train": valid_train, "val": valid_val, "test": valid_test, "bad": bad}


def row_keys(images: np.ndarray) -> set[bytes]:
    """One hashable key per image (tests of disjoint splits)."""
    return {np.ascontiguousarray(x).tobytes() for x in images}
