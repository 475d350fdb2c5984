"""The user's own data code: `dataset: {name: path/to/data.py:load, ...options}` or `run_search(dataset=load)`.

The loader is called once, on the driver, with the spec's options (checked
against its signature; `seed` is passed when it takes one) and returns

    {"train": SPLIT, "val": SPLIT, "test": SPLIT (optional), "classes": ["cat", "dog", ...]}

or the tuple (train, val, classes) / (train, val, test, classes), or a `trainables.data.DataBundle`. A SPLIT is

- a pair (images, labels) of tensors or arrays: images uint8 (0-255) or float
  (0-1), shaped (N, H, W), (N, C, H, W), or (N, H, W, C) for arrays whose last
  axis is 1 or 3; labels class indices; or
- a torch `Dataset` (anything with `len` and `[i]` -> (image, label)) whose
  images are PIL images, (C, H, W) tensors, or (H, W) / (H, W, C) arrays;
  its transform runs here, once (a random augmentation in it would be frozen:
  use the spec's `hflip` instead).

Everything is then decoded once into uint8 arrays in memory (an error says so
when it does not fit), normalised from the train split, shared with the
trials through Ray's object store, and the test split is touched once at the
end, as for the built-in data sets.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from trainables.errors import UserError

MEMORY_SHARE = 0.5  # decoded images may take at most half the machine's available memory


def _available_bytes() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _to_uint8(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < -1e-6 or np.nanmax(array) > 1 + 1e-6):
            raise UserError(f"{where}: float images must be in [0, 1] (got {np.nanmin(array):.3g}..{np.nanmax(array):.3g}); "
                            "return uint8 0-255 or scale to 0-1, unnormalised (hpsearch normalises from the train split)")
        return np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UserError(f"{where}: integer images must be 0-255, but got {array.min()}..{array.max()}")
        return array.astype(np.uint8)
    raise UserError(f"{where}: images of dtype {array.dtype} are not supported; return uint8 or float images")


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _batch_images(images: Any, where: str) -> np.ndarray:
    """(N, C, H, W) uint8 from a batch of images in any of the accepted layouts."""
    is_tensor = hasattr(images, "detach")
    array = _numpy(images)
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if not is_tensor and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
            array = array.transpose(0, 3, 1, 2)  # NHWC arrays
    else:
        raise UserError(f"{where}: images must be (N, H, W) or (N, C, H, W), but got shape {tuple(array.shape)}")
    return np.ascontiguousarray(_to_uint8(array, where))


def _item_image(image: Any, where: str) -> np.ndarray:
    """(C, H, W) uint8 from one Dataset item's image."""
    if hasattr(image, "getbands"):  # PIL
        array = np.asarray(image)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    elif hasattr(image, "detach"):
        array = _numpy(image)
        array = array[None] if array.ndim == 2 else array
    else:
        array = np.asarray(image)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1) if array.ndim == 3 else array
    if array.ndim != 3:
        raise UserError(f"{where}: an image must be 2-D or 3-D, but got shape {tuple(array.shape)}")
    return _to_uint8(array, where)


def _labels(values: Any, where: str) -> np.ndarray:
    labels = _numpy(values).reshape(-1)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise UserError(f"{where}: labels must be class indices (integers), but got {labels.dtype} values like {labels[:3].tolist()}")
    return labels.astype(np.int64)


def _from_dataset(dataset: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        n = len(dataset)
    except TypeError:
        raise UserError(f"{where}: a {type(dataset).__name__} has no len(); return a map-style torch Dataset or (images, labels)") from None
    if n == 0:
        return np.zeros((0, 1, 1, 1), np.uint8), np.zeros(0, np.int64)
    first = _item_image(_item(dataset, 0, where)[0], f"{where}[0]")
    need = n * first.nbytes
    if need > MEMORY_SHARE * _available_bytes():
        raise UserError(f"{where}: {n} images of {first.shape} need {need / 2**30:.1f} GiB decoded, more than half the free memory; "
                        "give an image folder (dataset: imagefolder, streamed from files) or smaller images")
    images = np.empty((n, *first.shape), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    for i in range(n):
        image, label = _item(dataset, i, where)
        array = first if i == 0 else _item_image(image, f"{where}[{i}]")
        if array.shape != first.shape:
            raise UserError(f"{where}[{i}]: image shape {array.shape} differs from {first.shape} (item 0); "
                            "resize every image to one size in the loader (e.g. transforms.Resize)")
        images[i] = array
        labels[i] = int(_labels([label], f"{where}[{i}]")[0])
    return images, labels


def _item(dataset: Any, i: int, where: str) -> tuple[Any, Any]:
    try:
        item = dataset[i]
    except Exception as exc:
        raise UserError(f"{where}[{i}] failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise UserError(f"{where}[{i}] is a {type(item).__name__}; a Dataset must return (image, label)")
    return item[0], item[1]


def _split(value: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(value, (tuple, list)) and len(value) == 2 and _is_batch(value[0]):
        images, labels = _batch_images(value[0], where), _labels(value[1], f"{where} labels")
    elif hasattr(value, "__getitem__") and hasattr(value, "__len__") and not isinstance(value, (tuple, list, dict, str)):
        images, labels = _from_dataset(value, where)
    else:
        raise UserError(f"{where} must be (images, labels) or a torch Dataset, but got {type(value).__name__}")
    if len(images) != len(labels):
        raise UserError(f"{where}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _is_batch(value: Any) -> bool:
    return hasattr(value, "shape") and len(value.shape) in (3, 4)


def _unpack(result: Any, ref: str) -> tuple[Any, Any, Any, Sequence[str]]:
    if isinstance(result, dict):
        missing = [k for k in ("train", "val", "classes") if k not in result]
        if missing:
            raise UserError(f"dataset {ref!r} returned a dict without {missing}; return train, val, (test,) and classes")
        unknown = set(result) - {"train", "val", "test", "classes"}
        if unknown:
            raise UserError(f"dataset {ref!r} returned unknown key(s) {sorted(unknown)}; use train, val, test, classes")
        return result["train"], result["val"], result.get("test"), result["classes"]
    if isinstance(result, tuple) and len(result) in (3, 4):
        return (result[0], result[1], None, result[2]) if len(result) == 3 else result
    raise UserError(f"dataset {ref!r} returned a {type(result).__name__}; return "
                    "{'train': ..., 'val': ..., 'test': ..., 'classes': [...]} (see trainables/user_data.py)")


def load_user_dataset(ref: str, loader: Callable[..., Any], options: dict[str, Any]) -> Any:
    """Call the user's loader with `options` and turn what it returns into a `DataBundle`."""
    from trainables.data import DataBundle, Split

    try:
        result = loader(**options)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"dataset {ref!r} failed with {options}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if isinstance(result, DataBundle):  # already hpsearch's own form (benchmarks hand over a prepared set)
        return result
    train, val, test, classes = _unpack(result, ref)
    class_names = [str(c) for c in classes]
    if len(class_names) < 2:
        raise UserError(f"dataset {ref!r} has {len(class_names)} class name(s); a classifier needs at least 2")
    splits = {}
    for key, value in (("train", train), ("val", val), ("test", test)):
        if value is None:
            continue
        images, labels = _split(value, f"dataset {ref!r} {key}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise UserError(f"dataset {ref!r} {key}: labels must be 0..{len(class_names) - 1} (one per class name), "
                            f"but got {labels.min()}..{labels.max()}")
        splits[key] = (images, labels)
    shapes = {key: images.shape[1:] for key, (images, _) in splits.items() if len(images)}
    if len(set(shapes.values())) > 1:
        raise UserError(f"dataset {ref!r}: the splits' images differ in shape ({shapes}); give every split one size")
    channels, height, width = next(iter(shapes.values())) if shapes else (1, 1, 1)
    if channels not in (1, 3):
        raise UserError(f"dataset {ref!r}: images have {channels} channels; give grey (1) or RGB (3) images")
    made = {key: Split(labels=labels, images=images) for key, (images, labels) in splits.items()}
    return DataBundle(name=ref, train=made["train"], val=made["val"], test=made.get("test"), class_names=class_names,
                      channels=int(channels), image_size=(int(height), int(width)))
