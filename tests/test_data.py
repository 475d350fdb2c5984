"""Tests of `trainables.data`: every registered data set offline, file formats, image folders,
streaming, normalisation statistics and the stratified split.

All data is generated in tmp_path (IDX files, CIFAR pickles, PIL images); nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
from _fixtures import (
    CIFAR_CLASSES,
    MNIST_FILES,
    fill_class,
    make_class_layout,
    make_split_layout,
    row_keys,
    tiny_cnn_hparams,
    trust_generated_cifar10,
    write_cifar10,
    write_image,
    write_mnist_like,
)

from trainables.data import DATASETS, UNLABELLED, create_dataset, decode_images, stratified_split
from trainables.errors import UserError
from trainables.train import RunSettings, fit

# ---------------------------------------------------------------------------------------------
# 1. Registry-generated: every registered data set, built offline


def _mnist_opts(tmp: Path) -> dict:
    write_mnist_like(tmp, "MNIST")
    return {"root": str(tmp), "download": False}


def _fashion_opts(tmp: Path) -> dict:
    write_mnist_like(tmp, "FashionMNIST", seed=1)
    return {"root": str(tmp), "download": False}


def _cifar_opts(tmp: Path) -> dict:
    write_cifar10(tmp)
    return {"root": str(tmp), "download": False}


def _imagefolder_opts(tmp: Path) -> dict:
    for c, name in enumerate(("cats", "dogs", "pandas")):
        fill_class(tmp / "animals" / name, 10, seed=c)
    return {"root": str(tmp / "animals"), "image_size": 16, "val_fraction": 0.2, "test_fraction": 0.2}


# How to build each data set offline; a data set registered without an entry here is tried
# with its defaults (and must then work offline too).
OFFLINE_OPTIONS = {
    "digits": lambda tmp: {},
    "fake": lambda tmp: {"size": 80, "num_classes": 4, "image_size": 12, "channels": 3},
    "mnist": _mnist_opts,
    "fashion-mnist": _fashion_opts,
    "cifar10": _cifar_opts,
    "imagefolder": _imagefolder_opts,
}


@pytest.mark.parametrize("name", DATASETS.names())
def test_registered_dataset_builds_offline(name, tmp_path, monkeypatch):
    options = OFFLINE_OPTIONS[name](tmp_path) if name in OFFLINE_OPTIONS else {}
    trust_generated_cifar10(monkeypatch, tmp_path)  # a no-op unless the options wrote CIFAR-10 batches
    bundle = create_dataset(name, **options)

    assert len(bundle.train) > 0 and len(bundle.val) > 0
    assert bundle.num_classes >= 2
    splits = {"train": bundle.train, "val": bundle.val}
    if bundle.test is not None:
        splits["test"] = bundle.test
    for split_name, split in splits.items():
        assert split.in_memory, split_name
        assert split.images.dtype == np.uint8
        assert split.images.shape == (len(split), bundle.channels, *bundle.image_size), split_name
        assert split.labels.dtype == np.int64
        assert split.labels.min() >= 0 and split.labels.max() < bundle.num_classes, split_name
    # Disjoint: no image of one split appears in another (generated/real images are all distinct).
    keys = {k: row_keys(s.images) for k, s in splits.items()}
    assert all(len(keys[k]) == len(splits[k]) for k in splits), "a split holds the same image twice"
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not keys[a] & keys[b], f"{a} and {b} share images"
    assert len(bundle.mean) == len(bundle.std) == bundle.channels
    assert all(s > 0 for s in bundle.std)


def test_digits_split_sizes_and_classes():
    bundle = create_dataset("digits", val_fraction=0.2, test_fraction=0.2, seed=0)
    total = len(bundle.train) + len(bundle.val) + len(bundle.test)
    assert total == 1797  # scikit-learn's digits, every sample used exactly once
    assert bundle.channels == 1 and bundle.image_size == (8, 8) and bundle.num_classes == 10
    assert abs(len(bundle.test) - 0.2 * 1797) <= 10 and abs(len(bundle.val) - 0.2 * 1797) <= 10
    assert set(bundle.train.labels.tolist()) == set(range(10))
    assert bundle.train.images.max() == 255 and bundle.train.images.min() == 0  # 0..16 scaled to 0..255


def test_train_subset_keeps_a_stratified_share_of_train_and_every_val_and_test_image():
    full = create_dataset("digits", val_fraction=0.2, test_fraction=0.2, seed=0)
    small = create_dataset("digits", val_fraction=0.2, test_fraction=0.2, seed=0, train_subset=0.2)
    assert abs(len(small.train) - 0.2 * len(full.train)) <= 10
    assert np.array_equal(small.val.labels, full.val.labels) and np.array_equal(small.test.images, full.test.images)
    counts = np.bincount(small.train.labels, minlength=10)
    assert counts.min() >= 0.15 * np.bincount(full.train.labels).min()  # every class kept in proportion
    train_rows = {x.tobytes() for x in full.train.images}
    assert all(x.tobytes() in train_rows for x in small.train.images)  # a subset of train, nothing from val or test
    with pytest.raises(UserError, match=r"train_subset must be a fraction in \(0, 1\], but got 0"):
        create_dataset("digits", train_subset=0)


# ---------------------------------------------------------------------------------------------
# 3a. MNIST / Fashion-MNIST from IDX files


def _source_index(images: np.ndarray) -> dict[bytes, int]:
    return {np.ascontiguousarray(x).tobytes(): i for i, x in enumerate(images)}


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_round_trips_pixels(name, folder, tmp_path):
    src = write_mnist_like(tmp_path, folder, n_train=60, n_test=20)
    bundle = create_dataset(name, root=str(tmp_path), download=False, val_fraction=0.2, normalize="none")

    assert bundle.channels == 1 and bundle.image_size == (28, 28) and bundle.num_classes == 10
    # test split = the t10k files, pixel for pixel and in order
    np.testing.assert_array_equal(bundle.test.images[:, 0], src["test_x"])
    np.testing.assert_array_equal(bundle.test.labels, src["test_y"])
    # train + val = the train files, each image exactly once, with its own label
    index = _source_index(src["train_x"])
    seen = []
    for split in (bundle.train, bundle.val):
        for image, label in zip(split.images[:, 0], split.labels):
            i = index[image.tobytes()]  # KeyError = a pixel changed on the way
            assert label == src["train_y"][i]
            seen.append(i)
    assert sorted(seen) == list(range(60))
    assert len(bundle.val) == 10  # round(0.2 * 6) = 1 per class, 10 classes
    if name == "fashion-mnist":
        assert bundle.class_names[0] == "T-shirt/top"


# ---------------------------------------------------------------------------------------------
# 3b. CIFAR-10 from the pickled python batches


def test_cifar10_reads_python_batches(tmp_path, monkeypatch):
    src = write_cifar10(tmp_path, per_batch=20, n_test=20)
    trust_generated_cifar10(monkeypatch, tmp_path)
    bundle = create_dataset("cifar10", root=str(tmp_path), download=False, val_fraction=0.2, normalize="none")

    assert bundle.class_names == CIFAR_CLASSES
    assert bundle.channels == 3 and bundle.image_size == (32, 32)
    np.testing.assert_array_equal(bundle.test.images, src["test_x"])
    np.testing.assert_array_equal(bundle.test.labels, src["test_y"])
    index = _source_index(src["train_x"])
    seen = []
    for split in (bundle.train, bundle.val):
        for image, label in zip(split.images, split.labels):
            i = index[image.tobytes()]
            assert label == src["train_y"][i]
            seen.append(i)
    assert sorted(seen) == list(range(100))
    assert len(bundle.val) == 20  # 20 % of 10 per class


# ---------------------------------------------------------------------------------------------
# 3c. Offline error paths


def test_mnist_missing_without_download_names_files_and_folder(tmp_path):
    with pytest.raises(UserError) as info:
        create_dataset("mnist", root=str(tmp_path), download=False)
    message = str(info.value)
    for f in MNIST_FILES:
        assert f in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "download" in message


def test_cifar10_missing_without_download_names_files_and_folder(tmp_path):
    with pytest.raises(UserError) as info:
        create_dataset("cifar10", root=str(tmp_path), download=False)
    message = str(info.value)
    assert "data_batch_1" in message and "test_batch" in message and "batches.meta" in message
    assert str(tmp_path / "cifar-10-batches-py") in message


def _no_network(self, *args, **kwargs):
    raise URLError("[Errno -3] Temporary failure in name resolution")


def test_mnist_download_offline_is_one_line_user_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.MNIST, "download", _no_network)  # simulate no internet
    with pytest.raises(UserError) as info:
        create_dataset("mnist", root=str(tmp_path / "data"), download=True)
    message = str(info.value)
    assert "\n" not in message
    assert "could not download mnist" in message and "URLError" in message
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "data" / "MNIST" / "raw") in message


def test_cifar10_download_offline_is_one_line_user_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.CIFAR10, "download", _no_network)
    with pytest.raises(UserError) as info:
        create_dataset("cifar10", root=str(tmp_path), download=True)
    message = str(info.value)
    assert "\n" not in message
    assert "could not download cifar10" in message and "data_batch_1" in message


# ---------------------------------------------------------------------------------------------
# 3d. Image folders


def _skip_warnings(record) -> list:
    return [w for w in record if "skipped" in str(w.message)]


def test_imagefolder_class_layout(tmp_path):
    root = tmp_path / "animals"
    info = make_class_layout(root, per_class=10)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable") as record:
        bundle = create_dataset("imagefolder", root=str(root), image_size=[12, 16], val_fraction=0.2, test_fraction=0.2)
    assert len(_skip_warnings(record)) == 1  # one warning for all bad files
    assert sorted(bundle.skipped_files) == sorted(str(p) for p in info["bad"])

    assert bundle.class_names == ["cats", "dogs", "pandas"]
    assert bundle.channels == 3 and bundle.image_size == (12, 16)
    splits = [bundle.train, bundle.val, bundle.test]
    assert sum(len(s) for s in splits) == len(info["valid"]) == 30  # every valid image decoded
    for split in splits:
        assert split.in_memory and split.images.dtype == np.uint8
        assert split.images.shape[1:] == (3, 12, 16)
        assert set(split.labels.tolist()) == {0, 1, 2}  # stratified: every class in every split
    counts = np.bincount(bundle.test.labels, minlength=3)
    assert counts.tolist() == [2, 2, 2]  # round(0.2 * 10 or 11) per class
    keys = [row_keys(s.images) for s in splits]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])


def test_imagefolder_decodes_modes_exactly(tmp_path):
    """Lossless images at the target size come out pixel for pixel (grey → 3 equal channels,
    palette → its RGB colours, RGBA → its RGB channels)."""
    from PIL import Image

    root = tmp_path / "pets"
    fill_class(root / "train" / "a", 4, seed=1)
    fill_class(root / "train" / "b", 4, seed=2)
    expected = []
    for i, mode in enumerate(("RGB", "L", "P", "RGBA")):
        path = root / "val" / "a" / f"{i}_{mode}.png"
        write_image(path, mode, (16, 12), seed=100 + i)  # (w, h) = the requested size: no resize
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGBA").convert("RGB") if mode in ("P", "RGBA") else im.convert("RGB"))
        expected.append(rgb.transpose(2, 0, 1))
    bundle = create_dataset("imagefolder", root=str(root), image_size=[12, 16])
    assert bundle.val.images.shape == (4, 3, 12, 16)
    for got, want in zip(bundle.val.images, expected):
        np.testing.assert_array_equal(got, want)
    grey = bundle.val.images[1]
    assert (grey[0] == grey[1]).all() and (grey[1] == grey[2]).all()


def test_imagefolder_split_layout_with_unlabelled_test(tmp_path):
    root = tmp_path / "dogImages"
    info = make_split_layout(root)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable") as record:
        bundle = create_dataset("imagefolder", root=str(root), image_size=16)
    assert len(_skip_warnings(record)) == 1
    assert sorted(bundle.skipped_files) == sorted(str(p) for p in info["bad"])

    assert bundle.class_names == info["classes"]
    assert len(bundle.train) == len(info["train"]) == 18
    assert len(bundle.val) == len(info["val"]) == 9
    assert bundle.val.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # BEAGLE/Corgi/pug → train's classes
    assert bundle.val.labelled
    assert bundle.test is not None and len(bundle.test) == 5
    assert (bundle.test.labels == UNLABELLED).all() and not bundle.test.labelled
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.images.shape[1:] == (3, 16, 16) and split.images.dtype == np.uint8


def test_imagefolder_split_layout_without_val_holds_out_train(tmp_path):
    root = tmp_path / "data"
    for c, name in enumerate(("x", "y")):
        fill_class(root / "TRAINING" / name, 10, seed=c)
        fill_class(root / "Testing" / name, 2, seed=10 + c)
    bundle = create_dataset("imagefolder", root=str(root), image_size=8, val_fraction=0.2)
    assert len(bundle.val) == 4 and len(bundle.train) == 16 and len(bundle.test) == 4
    assert np.bincount(bundle.val.labels).tolist() == [2, 2]
    assert bundle.test.labelled


def test_imagefolder_labels_follow_train_classes_after_a_class_is_added(tmp_path):
    """Val labels are indices into train's classes: adding a train class must relabel val,
    even though the val files themselves did not change (decoded-split cache)."""
    root = tmp_path / "data"
    for c, name in enumerate(("b", "c")):
        fill_class(root / "train" / name, 3, seed=c)
        fill_class(root / "val" / name, 2, seed=10 + c)
    first = create_dataset("imagefolder", root=str(root), image_size=8)
    assert first.val.labels.tolist() == [0, 0, 1, 1]
    fill_class(root / "train" / "a", 3, seed=5)  # new first class; val unchanged
    second = create_dataset("imagefolder", root=str(root), image_size=8)
    assert second.class_names == ["a", "b", "c"]
    assert second.val.labels.tolist() == [1, 1, 2, 2]


def test_imagefolder_empty_class_folder(tmp_path):
    root = tmp_path / "animals"
    fill_class(root / "cats", 3, seed=0)
    (root / "dogs").mkdir()
    with pytest.raises(UserError, match=r"dogs.* is empty"):
        create_dataset("imagefolder", root=str(root))


def test_imagefolder_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as info:
        create_dataset("imagefolder", root=str(missing))
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)


def test_imagefolder_without_class_subfolders(tmp_path):
    root = tmp_path / "loose"
    for i in range(3):
        write_image(root / f"{i}.png", "RGB", (8, 8), seed=i)
    with pytest.raises(UserError, match="no class sub-folders") as info:
        create_dataset("imagefolder", root=str(root))
    assert str(root) in str(info.value)


def test_imagefolder_class_with_only_unreadable_files(tmp_path):
    root = tmp_path / "animals"
    fill_class(root / "cats", 5, seed=0)
    (root / "dogs").mkdir()
    (root / "dogs" / "x.txt").write_text("nope")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match=r"dogs.*no readable train images"):
            create_dataset("imagefolder", root=str(root), image_size=8)


def test_decoding_leaves_warning_filters_alone(tmp_path):
    """Decoding in threads must not leave a global "ignore" filter behind (that silenced the
    skipped-files warning and every later warning of the process)."""
    files = [str(p) for p in fill_class(tmp_path / "a", 40, seed=3)]
    before = list(warnings.filters)
    for _ in range(3):
        decoded = decode_images(files, (8, 8), 3)
        assert all(d is not None and d.shape == (3, 8, 8) for d in decoded)
    assert warnings.filters == before


# ---------------------------------------------------------------------------------------------
# 3e. Streaming (files kept on disk)


def test_imagefolder_streaming_trains_one_epoch(tmp_path):
    root = tmp_path / "animals"
    info = make_class_layout(root, per_class=8)
    opts = dict(root=str(root), image_size=12, val_fraction=0.25, test_fraction=0.25)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable") as record:
        bundle = create_dataset("imagefolder", max_in_memory_mb=0, **opts)
    assert len(_skip_warnings(record)) == 1
    assert sorted(bundle.skipped_files) == sorted(str(p) for p in info["bad"])
    for split in (bundle.train, bundle.val, bundle.test):
        assert not split.in_memory and split.images is None
        assert len(split.files) == len(split.labels) > 0
        assert not set(split.files) & {str(p) for p in info["bad"]}
    assert sum(len(s) for s in (bundle.train, bundle.val, bundle.test)) == 24
    assert "streamed from files" in bundle.summary()

    # statistics over decoded files equal those of the same split decoded into memory
    with pytest.warns(UserWarning):
        in_memory = create_dataset("imagefolder", **opts)
    assert in_memory.train.in_memory
    np.testing.assert_allclose(bundle.mean, in_memory.mean, atol=1e-9)
    np.testing.assert_allclose(bundle.std, in_memory.std, atol=1e-9)

    settings = RunSettings(model="cnn", max_epochs=1, device="cpu", loader_workers=0, eval_batch_size=7)
    result = fit(tiny_cnn_hparams(batch_size=5), bundle, settings)
    assert result.status == "ok" and len(result.history) == 1
    assert result.history[0]["epoch"] == 1.0
    assert np.isfinite(result.history[0]["train_loss"]) and 0.0 <= result.history[0]["val_acc"] <= 1.0
    assert result.test is not None and result.test["n"] == len(bundle.test)


def test_streamed_statistics_depend_on_channels(tmp_path):
    """The same files read in colour and in grey need their own statistics (3 vs 1 channel)."""
    root = tmp_path / "animals"
    for c, name in enumerate(("cats", "dogs")):
        fill_class(root / name, 6, seed=c)
    rgb = create_dataset("imagefolder", root=str(root), image_size=8, max_in_memory_mb=0, val_fraction=0.2, test_fraction=0.0)
    grey = create_dataset("imagefolder", root=str(root), image_size=8, max_in_memory_mb=0, val_fraction=0.2, test_fraction=0.0, grayscale=True)
    assert len(rgb.mean) == len(rgb.std) == 3
    assert grey.channels == 1 and len(grey.mean) == len(grey.std) == 1


# ---------------------------------------------------------------------------------------------
# 3f. Normalisation statistics


def test_train_statistics_are_exact_and_cached(hpsearch_cache):
    bundle = create_dataset("digits")
    x = bundle.train.images.astype(np.float64) / 255.0
    np.testing.assert_allclose(bundle.mean, x.mean(axis=(0, 2, 3)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(bundle.std, x.std(axis=(0, 2, 3)), rtol=0, atol=1e-6)
    # not the statistics of all data: val/test are not included
    everything = np.concatenate([bundle.train.images, bundle.val.images, bundle.test.images]).astype(np.float64) / 255
    assert abs(everything.mean() - bundle.mean[0]) > 1e-7

    stats = list((hpsearch_cache / "stats").glob("*.json"))
    assert len(stats) == 1
    cached = json.loads(stats[0].read_text())
    assert cached["mean"] == list(bundle.mean)
    stats[0].write_text(json.dumps({"mean": [0.123], "std": [0.456]}))  # the second call must read this
    again = create_dataset("digits")
    assert again.mean == (0.123,) and again.std == (0.456,)


def test_train_statistics_ignore_val(tmp_path):
    root = tmp_path / "pets"
    for c, name in enumerate(("a", "b")):
        fill_class(root / "train" / name, 4, seed=c)
        fill_class(root / "val" / name, 3, seed=10 + c)
    first = create_dataset("imagefolder", root=str(root), image_size=8)
    x = first.train.images.astype(np.float64) / 255.0
    np.testing.assert_allclose(first.mean, x.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(first.std, x.std(axis=(0, 2, 3)), atol=1e-6)

    for i, path in enumerate(sorted((root / "val").rglob("*.*"))):  # new val pixels
        write_image(path.with_suffix(".png"), "RGB", (8, 8), seed=500 + i)
        if path.suffix != ".png":
            path.unlink()
    second = create_dataset("imagefolder", root=str(root), image_size=8)
    assert not np.array_equal(second.val.images, first.val.images)
    assert second.mean == first.mean and second.std == first.std

    train_file = sorted((root / "train" / "a").iterdir())[0]
    write_image(train_file.with_suffix(".png"), "RGB", (8, 8), seed=999)
    if train_file.suffix != ".png":
        train_file.unlink()
    st = train_file.with_suffix(".png").stat()
    os.utime(train_file.with_suffix(".png"), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = create_dataset("imagefolder", root=str(root), image_size=8)
    assert third.mean != first.mean  # a train image changed: new statistics


def test_normalize_explicit_and_none():
    explicit = create_dataset("fake", size=30, num_classes=3, image_size=8, normalize={"mean": [0.5, 0.4, 0.3], "std": 0.25})
    assert explicit.mean == (0.5, 0.4, 0.3) and explicit.std == (0.25, 0.25, 0.25)
    none = create_dataset("fake", size=30, num_classes=3, image_size=8, normalize="none")
    assert none.mean == (0.0, 0.0, 0.0) and none.std == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "normalize,match",
    [
        ({"mean": [0.5, 0.5], "std": [0.5, 0.5, 0.5]}, r"mean needs 3 values"),
        ({"mean": 0.5, "std": [0.5, 0.0, 0.5]}, r"std must be > 0"),
        ("imagenet", r"normalize must be"),
        ({"mean": 0.5}, r"normalize must be"),
    ],
)
def test_normalize_errors(normalize, match):
    with pytest.raises(UserError, match=match):
        create_dataset("fake", size=30, num_classes=3, image_size=8, normalize=normalize)


# ---------------------------------------------------------------------------------------------
# 3g. stratified_split


def _labels() -> np.ndarray:
    return np.random.default_rng(7).permutation(np.repeat(np.arange(4), [50, 30, 20, 10]))


def test_stratified_split_partitions_with_class_proportions():
    labels = _labels()
    a, b, rest = stratified_split(labels, [0.2, 0.1], seed=3)
    assert not set(a) & set(b) and not set(a) & set(rest) and not set(b) & set(rest)
    assert sorted(np.concatenate([a, b, rest]).tolist()) == list(range(len(labels)))
    for part in (a, b, rest):
        assert part.dtype == np.int64 and (np.diff(part) > 0).all()
    for cls, n in enumerate([50, 30, 20, 10]):
        assert (labels[a] == cls).sum() == round(0.2 * n)
        assert (labels[b] == cls).sum() == round(0.1 * n)
        assert (labels[rest] == cls).sum() == n - round(0.2 * n) - round(0.1 * n)


def test_stratified_split_is_seeded():
    labels = _labels()
    same = [stratified_split(labels, [0.2], seed=1) for _ in range(2)]
    other = stratified_split(labels, [0.2], seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(*same))
    assert not np.array_equal(same[0][0], other[0])


def test_stratified_split_keeps_rare_classes_in_rest():
    labels = np.array([0] * 10 + [1])  # class 1 has one sample: it stays in the last part
    a, rest = stratified_split(labels, [0.5], seed=0)
    assert 10 in rest.tolist() and len(a) == 5


@pytest.mark.parametrize("fractions", [[0.5, 0.5], [-0.1], [1.0]])
def test_stratified_split_rejects_bad_fractions(fractions):
    with pytest.raises(UserError, match="fractions"):
        stratified_split(np.zeros(10, dtype=np.int64), fractions, seed=0)


def test_cifar10_batches_that_fail_torchvisions_checksum_are_refused_in_one_line(tmp_path):
    """Generated batches are not the official files: torchvision's MD5 check refuses them, and so do we."""
    write_cifar10(tmp_path, per_batch=20, n_test=20)
    with pytest.raises(UserError) as info:
        create_dataset("cifar10", root=str(tmp_path), download=False)
    message = str(info.value)
    assert "\n" not in message and "checksum" in message and str(tmp_path / "cifar-10-batches-py") in message
