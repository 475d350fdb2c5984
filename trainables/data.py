"""Data sets: decode once into uint8 arrays, split train/val/test, normalise.

Every data set factory returns a `DataBundle`: train / val / test `Split`s and
the class names. Splits that fit in memory hold one uint8 array (N, C, H, W)
that training indexes batch by batch (no per-sample PIL work per epoch); larger
image folders keep file paths and stream through a `DataLoader` with workers.
The test split is never used for selection: where a data set has no validation
split, a stratified, seeded fraction of train is held out.

Per-channel mean/std are exact statistics of the train split only, cached on
disk keyed by what the split holds, and travel with every checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from trainables.errors import DataWarning, UserError
from trainables.files import write_atomic
from trainables.references import PYTHON_PREFIX, is_reference, keyword_parameters, load_reference
from trainables.registry import Registry
from trainables.user_data import load_user_dataset

log = logging.getLogger(__name__)

DATASETS = Registry("dataset")
register_dataset = DATASETS.register

SPLIT_DIR_NAMES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
UNLABELLED = -1


def cache_dir() -> Path:
    """Where decoded folders and normalisation statistics are cached ($HPSEARCH_CACHE)."""
    return Path(os.environ.get("HPSEARCH_CACHE", Path.home() / ".cache" / "hpsearch"))


@dataclass
class Split:
    """One split: uint8 images (N, C, H, W) in memory, or image files to stream.

    `labels` are int64 class indices; `UNLABELLED` (-1) marks a test folder
    without class sub-folders (tutorial D), which can be predicted, not scored.
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    files: list[str] | None = None

    def __post_init__(self) -> None:
        if (self.images is None) == (self.files is None):
            raise ValueError("a Split holds either images or files")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    @property
    def labelled(self) -> bool:
        return len(self.labels) > 0 and bool((self.labels != UNLABELLED).all())

    def subset(self, index: np.ndarray) -> "Split":
        """The samples at `index` (a copy for arrays, a list for files)."""
        if self.images is not None:
            return Split(labels=self.labels[index], images=self.images[index])
        assert self.files is not None
        return Split(labels=self.labels[index], files=[self.files[i] for i in index])


@dataclass
class DataBundle:
    """What a trial needs to train: splits, class names, shapes and normalisation."""

    name: str
    train: Split
    val: Split
    test: Split | None
    class_names: list[str]
    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    skipped_files: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        """One line: sizes, shape and where the data lives."""
        test = len(self.test) if self.test is not None else 0
        where = "in memory" if self.train.in_memory else "streamed from files"
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {test} test, "
            f"{self.num_classes} classes, {self.channels}x{self.image_size[0]}x{self.image_size[1]}, {where}"
        )


# ----------------------------------------------------------------------------------------------
# Entry point


_loaders: dict[str, Callable[..., Any]] = {}  # per process: user loaders by name (run_search(dataset=...) registers one)


def is_loaded_loader(name: str) -> bool:
    """Whether this process already holds the user loader `name` (its file need not be on disk any more)."""
    return name in _loaders


def resolve_loader(name: str, loader: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """The user's data loader `name` names (or `loader` itself); not callable, or a missing file/name, is a `UserError`."""
    if loader is None and name in _loaders:
        return _loaders[name]
    if loader is None:
        if name.startswith(PYTHON_PREFIX):
            raise UserError(f"dataset {name!r} was a function handed to run_search(dataset=...); pass it again, or name a file.py:load in the spec")
        loader = load_reference(name, kind="dataset")
    if not callable(loader):
        raise UserError(f"dataset {name!r} is a {type(loader).__name__}, not a function returning the splits (see trainables/user_data.py)")
    _loaders[name] = loader
    return loader


def dataset_options(name: str, loader: Callable[..., Any] | None = None) -> tuple[set[str], bool]:
    """(keyword options data set `name` takes, whether it takes any **kwargs)."""
    if loader is not None or is_reference(name):
        return keyword_parameters(resolve_loader(name, loader))
    return DATASETS.accepted_options(name), False


def create_dataset(name: str, *, normalize: Any = "train", train_subset: float = 1.0, loader: Callable[..., Any] | None = None,
                   **options: Any) -> DataBundle:
    """Build data set `name` with its `options` and attach normalisation statistics.

    `name` is a registered data set, or the user's loader (`file.py:load`, `package.module:load`, or the
    function itself as `loader`: trainables.user_data). `normalize`: "train" (exact per-channel mean/std
    of the train split, the default), "none" (mean 0, std 1: ToTensor only), or {"mean": [...], "std": [...]}.
    `train_subset` < 1 keeps that share of the training images (stratified, seeded; val and test unchanged):
    a cheap first search for a second one to warm-start from.
    """
    if isinstance(train_subset, bool) or not isinstance(train_subset, (int, float)) or not 0 < train_subset <= 1:
        raise UserError(f"dataset train_subset must be a fraction in (0, 1], but got {train_subset!r}")
    if loader is not None or is_reference(name):
        bundle: DataBundle = load_user_dataset(name, resolve_loader(name, loader), options)
    else:
        bundle = DATASETS.create(name, **options)
    if train_subset < 1:
        _, kept = stratified_split(bundle.train.labels, [1 - float(train_subset)], int(options.get("seed", 0)))
        bundle = replace(bundle, train=bundle.train.subset(kept))
    if len(bundle.train) == 0 or len(bundle.val) == 0:
        raise UserError(
            f"data set {name!r} has {len(bundle.train)} train and {len(bundle.val)} val images; "
            "both must be non-empty (add images or lower val_fraction)"
        )
    mean, std = _resolve_normalization(bundle, normalize)
    return replace(bundle, mean=mean, std=std)


def _resolve_normalization(bundle: DataBundle, normalize: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    c = bundle.channels
    if normalize == "train":
        return train_statistics(bundle.train, channels=c, image_size=bundle.image_size)
    if normalize == "none":
        return (0.0,) * c, (1.0,) * c
    if isinstance(normalize, dict) and set(normalize) == {"mean", "std"}:
        mean, std = (_per_channel(normalize[k], c, k) for k in ("mean", "std"))
        if min(std) <= 0:
            raise UserError(f"normalize std must be > 0, but got std={list(std)}")
        return mean, std
    raise UserError(
        f"normalize must be 'train', 'none' or {{mean: [...], std: [...]}}, but got {normalize!r}"
    )


def _per_channel(value: Any, channels: int, key: str) -> tuple[float, ...]:
    values = [float(value)] * channels if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != channels:
        raise UserError(f"normalize {key} needs {channels} values (one per channel), but got {value!r}")
    return tuple(values)


# ----------------------------------------------------------------------------------------------
# Splitting and statistics


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions)+1 parts: the given fractions, then the rest.

    Stratified (each class split in the same proportions, every class keeps at
    least one sample in the rest when it can) and seeded.
    """
    if any(f < 0 for f in fractions) or sum(fractions) >= 1:
        raise UserError(f"split fractions must be >= 0 and sum to < 1, but got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for p, frac in enumerate(fractions):
            take = int(round(frac * len(idx)))
            take = min(take, max(len(idx) - start - 1, 0))
            parts[p].append(idx[start : start + take])
            start += take
        parts[-1].append(idx[start:])
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.empty(0, np.int64) for p in parts]


def train_statistics(
    split: Split, *, channels: int, image_size: tuple[int, int]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of a split's pixels scaled to [0, 1], cached on disk."""
    key = _split_fingerprint(split, image_size) + f"-c{channels}"  # files read in colour or grey
    path = cache_dir() / "stats" / f"{key}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        return tuple(cached["mean"]), tuple(cached["std"])
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for images in _chunks_of(split, image_size, channels):
        x = images.astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        total_sq += (x * x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 1e-12))
    result = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
    write_atomic(path, json.dumps({"mean": result[0], "std": result[1]}).encode())
    return result


def _chunks_of(split: Split, image_size: tuple[int, int], channels: int, chunk: int = 4096) -> Iterator[np.ndarray]:
    if split.images is not None:
        for start in range(0, len(split), chunk):
            yield split.images[start : start + chunk]
        return
    assert split.files is not None
    for start in range(0, len(split.files), chunk):
        decoded = decode_images(split.files[start : start + chunk], image_size, channels)
        yield np.stack([d for d in decoded if d is not None]) if any(d is not None for d in decoded) else np.zeros(
            (0, channels, *image_size), np.uint8
        )


def _split_fingerprint(split: Split, image_size: tuple[int, int]) -> str:
    h = hashlib.sha1()
    h.update(repr(image_size).encode())
    if split.files is not None:
        for f in split.files:
            st = os.stat(f)
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    else:
        assert split.images is not None
        h.update(repr(split.images.shape).encode())
        h.update(hashlib.sha1(np.ascontiguousarray(split.images).data).digest())
    return h.hexdigest()[:20]


def _held_out(
    name: str, images: np.ndarray, labels: np.ndarray, test: Split | None, class_names: list[str],
    *, val_fraction: float, seed: int,
) -> DataBundle:
    """Bundle a data set whose train split loses a stratified val fraction."""
    val_idx, train_idx = stratified_split(labels, [val_fraction], seed)
    return DataBundle(
        name=name,
        train=Split(labels=labels[train_idx], images=images[train_idx]),
        val=Split(labels=labels[val_idx], images=images[val_idx]),
        test=test,
        class_names=class_names,
        channels=images.shape[1],
        image_size=(images.shape[2], images.shape[3]),
    )


def _three_way(
    name: str, images: np.ndarray, labels: np.ndarray, class_names: list[str],
    *, test_fraction: float, val_fraction: float, seed: int,
) -> DataBundle:
    """Bundle a data set with no official splits: stratified, seeded test and val fractions."""
    test_idx, val_idx, train_idx = stratified_split(labels, [test_fraction, val_fraction], seed)
    return DataBundle(
        name=name,
        train=Split(labels=labels[train_idx], images=images[train_idx]),
        val=Split(labels=labels[val_idx], images=images[val_idx]),
        test=Split(labels=labels[test_idx], images=images[test_idx]),
        class_names=class_names,
        channels=images.shape[1],
        image_size=(images.shape[2], images.shape[3]),
    )


# ----------------------------------------------------------------------------------------------
# Registered data sets


@register_dataset()
def digits(*, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> DataBundle:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); works offline."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = np.clip(raw.images * 16.0, 0, 255).astype(np.uint8)[:, None, :, :]  # 0..16 -> 0..255
    labels = raw.target.astype(np.int64)
    return _three_way("digits", images, labels, [str(d) for d in range(10)], test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)


def _torchvision_mnist_like(cls_name: str, name: str, root: str, val_fraction: float, seed: int, download: bool) -> DataBundle:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root_path = Path(root).expanduser()
    raw_folder = root_path / cls_name / "raw"
    expected = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    splits = [_open_torchvision(cls, name, root_path, train, download, raw_folder, expected) for train in (True, False)]
    (train_x, train_y), (test_x, test_y) = [
        (ds.data.numpy().astype(np.uint8)[:, None, :, :], ds.targets.numpy().astype(np.int64)) for ds in splits
    ]
    return _held_out(
        name, train_x, train_y, Split(labels=test_y, images=test_x), list(splits[0].classes),
        val_fraction=val_fraction, seed=seed,
    )


def _open_torchvision(cls: Any, name: str, root: Path, train: bool, download: bool, folder: Path, expected: list[str]) -> Any:
    """Open a torchvision data set from `root`, downloading only when its files are absent."""
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError:
        pass  # not found: fall through to download
    hint = f"expected {', '.join(expected)} in {folder}"
    if not download:
        raise UserError(f"{name} not found under {root}, or a file failed torchvision's checksum ({hint}); "
                        f"set download: true or copy the original files there")
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(root / f".{name}.download.lock")):
            return cls(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - any network/IO failure becomes one actionable line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"could not download {name} to {root} ({type(exc).__name__}: {first[:160]}); "
            f"offline? {hint}, then run again"
        ) from None


@register_dataset()
def mnist(*, root: str = "~/data", val_fraction: float = 0.1, seed: int = 0, download: bool = True) -> DataBundle:
    """MNIST 28x28 grey digits via torchvision under `root` (downloaded only when absent)."""
    return _torchvision_mnist_like("MNIST", "mnist", root, val_fraction, seed, download)


@register_dataset()
def fashion_mnist(*, root: str = "~/data", val_fraction: float = 0.1, seed: int = 0, download: bool = True) -> DataBundle:
    """Fashion-MNIST 28x28 grey clothing via torchvision under `root`."""
    return _torchvision_mnist_like("FashionMNIST", "fashion-mnist", root, val_fraction, seed, download)


CIFAR10_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"]


@register_dataset()
def cifar10(*, root: str = "~/data", val_fraction: float = 0.2, seed: int = 0, download: bool = True) -> DataBundle:
    """CIFAR-10 32x32 RGB from `root`/cifar-10-batches-py via torchvision (downloaded only when absent,
    each batch checked against its MD5); its uint8 arrays are used as they are, no per-sample PIL path."""
    import torchvision.datasets as tvd

    root_path = Path(root).expanduser()
    folder = root_path / "cifar-10-batches-py"
    train = _open_torchvision(tvd.CIFAR10, "cifar10", root_path, True, download, folder, CIFAR10_FILES)
    test = tvd.CIFAR10(str(root_path), train=False, download=False)

    def arrays(split: Any) -> tuple[np.ndarray, np.ndarray]:  # torchvision keeps N x 32 x 32 x 3
        return np.ascontiguousarray(split.data.transpose(0, 3, 1, 2)), np.asarray(split.targets, dtype=np.int64)

    train_x, train_y = arrays(train)
    test_x, test_y = arrays(test)
    class_names = list(train.classes)
    return _held_out(
        "cifar10", train_x, train_y, Split(labels=test_y, images=test_x), class_names,
        val_fraction=val_fraction, seed=seed,
    )


@register_dataset()
def fake(
    *, size: int = 512, num_classes: int = 10, image_size: int = 32, channels: int = 3,
    val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
) -> DataBundle:
    """torchvision `FakeData` (random images) decoded into arrays: for smoke tests and benchmarks."""
    from torchvision.datasets import FakeData

    ds = FakeData(size=size, image_size=(channels, image_size, image_size), num_classes=num_classes, random_offset=seed)
    images = np.stack([_pil_to_array(ds[i][0], (image_size, image_size), channels) for i in range(size)])
    labels = np.asarray([int(ds[i][1]) for i in range(size)], dtype=np.int64)
    return _three_way("fake", images, labels, [f"class{i}" for i in range(num_classes)], test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)


# ----------------------------------------------------------------------------------------------
# Image folders


def _pil_to_array(image: Any, size: tuple[int, int], channels: int) -> np.ndarray:
    mode = "L" if channels == 1 else "RGB"
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit grey: scale to 8 bits, don't clip
        wide = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(wide.max()), 1.0)
        from PIL import Image

        image = Image.fromarray(np.clip(wide / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode != mode:
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA").convert(mode)  # palette/alpha → opaque
        else:
            image = image.convert(mode)
    if image.size != (size[1], size[0]):
        from PIL import Image

        image = image.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None, :, :] if channels == 1 else arr.transpose(2, 0, 1).copy()


def decode_image(path: str, size: tuple[int, int], channels: int) -> np.ndarray | None:
    """Decode one file to a uint8 (C, H, W) array; None when it is not a readable image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. DecompressionBombWarning, palette warnings
        return _decode_image(path, size, channels)


def _decode_image(path: str, size: tuple[int, int], channels: int) -> np.ndarray | None:
    """`decode_image` without touching the warning filters (safe to call from threads)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB" if channels == 3 else "L", (size[1], size[0]))
            return _pil_to_array(im, size, channels)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def decode_images(paths: Sequence[str], size: tuple[int, int], channels: int) -> list[np.ndarray | None]:
    """Decode files in parallel threads (Pillow releases the GIL while decoding).

    The warning filters are changed once, here: `warnings.catch_warnings` is not
    thread-safe, and entering it in every thread left "ignore" installed for good.
    """
    workers = min(8, os.cpu_count() or 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. DecompressionBombWarning, palette warnings
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda p: _decode_image(p, size, channels), paths, chunksize=64))


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and _visible(p) and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))


def _find_split_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p)):
        for split, names in SPLIT_DIR_NAMES.items():
            if child.name.lower() in names:
                if split in found:
                    raise UserError(f"{root} has two {split} folders ({found[split].name}, {child.name}); keep one")
                found[split] = child
    return found


def _class_files(folder: Path, classes: list[str] | None) -> tuple[list[str], list[int], list[str]]:
    """Files and labels of a `<class>/*` folder; `classes` fixes the label order (from train)."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))
    if not class_dirs:
        raise UserError(f"{folder} has no class sub-folders; put images in {folder}/<class name>/")
    names = [d.name for d in class_dirs]
    if classes is None:
        classes = names
    by_lower = {c.lower(): i for i, c in enumerate(classes)}
    files: list[str] = []
    labels: list[int] = []
    for d in class_dirs:
        if d.name.lower() not in by_lower:
            raise UserError(f"class folder {d} is not a class of the train split ({', '.join(classes)})")
        found = _files_under(d)
        if not found:
            raise UserError(f"class folder {d} is empty; add images or remove it")
        files += found
        labels += [by_lower[d.name.lower()]] * len(found)
    return files, labels, classes


@register_dataset()
def imagefolder(
    *, root: str, image_size: int | list[int] = 64, grayscale: bool = False,
    val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0, max_in_memory_mb: int = 4096,
) -> DataBundle:
    """A user's folder: `root/<class>/*` (split here: tutorial A) or `root/{train,val,test}/<class>/*` (tutorial D).

    Split folder names match case-insensitively (Train/Validation/Test too); a
    missing val folder is held out of train; a test folder without class
    sub-folders is unlabelled (predictable, not scored). Images are converted
    to RGB (or grey) and resized; unreadable files are skipped and counted in
    one warning. Up to `max_in_memory_mb` of decoded pixels are kept in memory.
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise UserError(f"image folder {root_path} does not exist; set dataset.root to a folder of <class>/ images")
    size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    channels = 1 if grayscale else 3
    split_dirs = _find_split_dirs(root_path)

    if split_dirs:
        if "train" not in split_dirs:
            raise UserError(f"{root_path} has {', '.join(d.name for d in split_dirs.values())} but no train folder")
        train_files, train_labels, classes = _class_files(split_dirs["train"], None)
        parts: dict[str, tuple[list[str], list[int]]] = {"train": (train_files, train_labels)}
        for split in ("val", "test"):
            if split not in split_dirs:
                continue
            folder = split_dirs[split]
            if split == "test" and not any(p.is_dir() and _visible(p) for p in folder.iterdir()):
                loose = _files_under(folder)  # unlabelled test folder (tutorial D's submission set)
                parts[split] = (loose, [UNLABELLED] * len(loose))
            else:
                files, labels, _ = _class_files(folder, classes)
                parts[split] = (files, labels)
        if "val" not in parts:
            labels_arr = np.asarray(parts["train"][1])
            val_idx, train_idx = stratified_split(labels_arr, [val_fraction], seed)
            files = parts["train"][0]
            parts["val"] = ([files[i] for i in val_idx], [int(labels_arr[i]) for i in val_idx])
            parts["train"] = ([files[i] for i in train_idx], [int(labels_arr[i]) for i in train_idx])
    else:
        all_files, all_labels, classes = _class_files(root_path, None)
        labels_arr = np.asarray(all_labels)
        test_idx, val_idx, train_idx = stratified_split(labels_arr, [test_fraction, val_fraction], seed)
        parts = {
            name: ([all_files[i] for i in idx], [all_labels[i] for i in idx])
            for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))
            if len(idx) or name != "test"
        }

    n_images = sum(len(f) for f, _ in parts.values())
    in_memory = n_images * channels * size[0] * size[1] <= max_in_memory_mb * 2**20
    skipped: list[str] = []
    splits: dict[str, Split] = {}
    for name, (files, labels) in parts.items():
        splits[name] = (_decode_split if in_memory else _file_split)(files, labels, size, channels, skipped)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable or non-image file(s) in {root_path} (first: {skipped[0]})",
            DataWarning, stacklevel=2,
        )
    for name, split in splits.items():
        present = set(split.labels[split.labels != UNLABELLED].tolist())
        if name == "train" and len(present) < len(classes):
            missing = [classes[i] for i in range(len(classes)) if i not in present]
            raise UserError(f"class(es) {missing} have no readable train images in {root_path}; add images or remove them")
    return DataBundle(
        name=f"imagefolder:{root_path.name}",
        train=splits["train"],
        val=splits["val"],
        test=splits.get("test"),
        class_names=classes,
        channels=channels,
        image_size=size,
        skipped_files=skipped,
    )


def _decode_split(files: list[str], labels: list[int], size: tuple[int, int], channels: int, skipped: list[str]) -> Split:
    """Decode a split once into arrays, cached on disk keyed by its files (path, size, mtime)."""
    fingerprint = _split_fingerprint(Split(labels=np.asarray(labels), files=files), size) + f"-c{channels}"
    # labels are indices into train's classes: the same files get new labels when a class is added
    fingerprint += "-" + hashlib.sha1(np.asarray(labels, dtype=np.int64).tobytes()).hexdigest()[:12]
    path = cache_dir() / "decoded" / f"{fingerprint}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            skipped += [str(s) for s in z["skipped"]]
            return Split(labels=z["labels"], images=z["images"])
    decoded = decode_images(files, size, channels)
    keep = [i for i, d in enumerate(decoded) if d is not None]
    bad = [files[i] for i, d in enumerate(decoded) if d is None]
    skipped += bad
    images = np.stack([decoded[i] for i in keep]) if keep else np.zeros((0, channels, *size), np.uint8)
    label_arr = np.asarray([labels[i] for i in keep], dtype=np.int64)
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to a path
            np.savez(f, images=images, labels=label_arr, skipped=np.asarray(bad, dtype=str))

    write_atomic(path, save)
    return Split(labels=label_arr, images=images)


def _file_split(files: list[str], labels: list[int], size: tuple[int, int], channels: int, skipped: list[str]) -> Split:
    """Keep a large split as files; unreadable ones are found (header check) and dropped now."""
    from PIL import Image

    keep_files, keep_labels = [], []
    for f, y in zip(files, labels):
        try:
            with Image.open(f) as im:
                im.verify()
        except Exception:  # noqa: BLE001 - any decode failure means "not an image"
            skipped.append(f)
            continue
        keep_files.append(f)
        keep_labels.append(y)
    return Split(labels=np.asarray(keep_labels, dtype=np.int64), files=keep_files)
