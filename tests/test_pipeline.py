"""Tests of `trainables.pipeline`: batch augmentation, normalisation, loaders and BatchStream."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.data import Split
from trainables.pipeline import Augmentation, BatchStream, Normalizer, SplitLoader, augment, collate_files


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distinct_batch(n: int = 64, c: int = 3, h: int = 12, w: int = 10) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(123))


# ---------------------------------------------------------------------------------------------
# augment


def test_all_off_is_identity():
    x = _distinct_batch()
    aug = Augmentation()
    assert not aug.active
    out = augment(x, aug, _gen())
    assert torch.equal(out, x)


def test_empty_batch_passes_through():
    x = torch.zeros(0, 3, 8, 8)
    assert augment(x, Augmentation(hflip=True, rotation=10, crop_padding=2), _gen()).shape == (0, 3, 8, 8)


def test_hflip_flips_some_but_not_all():
    x = _distinct_batch(64)
    out = augment(x, Augmentation(hflip=True), _gen(1))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is either flipped or untouched
    assert 0 < sum(flipped) < 64
    assert 16 <= sum(flipped) <= 48  # p = 0.5
    again = augment(x, Augmentation(hflip=True), _gen(1))
    assert torch.equal(out, again)  # seeded


@pytest.mark.parametrize("p", [1, 3])
def test_crop_padding_shifts_by_at_most_p_with_zero_fill(p):
    n, c, h, w = 32, 2, 9, 11
    # every pixel distinct and > 0, so a shifted copy can be located exactly
    x = (torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w) + 1) / (n * c * h * w + 1)
    out = augment(x, Augmentation(crop_padding=p), _gen(2))
    assert out.shape == x.shape
    shifts = set()
    for i in range(n):
        # the output pixel (r, q) shows input pixel (r + dy, q + dx), or zero outside the image
        matches = []
        for dy in range(-p, p + 1):
            for dx in range(-p, p + 1):
                want = torch.zeros(c, h, w)
                r0, r1 = max(0, -dy), min(h, h - dy)
                q0, q1 = max(0, -dx), min(w, w - dx)
                want[:, r0:r1, q0:q1] = x[i, :, r0 + dy : r1 + dy, q0 + dx : q1 + dx]
                if torch.equal(out[i], want):
                    matches.append((dy, dx))
        assert len(matches) == 1, f"image {i} is not a zero-filled shift of at most {p} pixels"
        shifts.add(matches[0])
    assert len(shifts) > 1  # random offsets
    assert (out == 0).any()  # some borders are zero-filled


def test_rotation_and_translate_keep_shape_and_range():
    x = _distinct_batch(8)
    out = augment(x, Augmentation(rotation=30.0), _gen(3))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    moved = augment(x, Augmentation(translate=0.2), _gen(3))
    assert moved.shape == x.shape and not torch.equal(moved, x)


def test_small_rotation_keeps_the_centre():
    x = torch.zeros(4, 1, 21, 21)
    x[:, :, 8:13, 8:13] = 1.0  # a centred square
    out = augment(x, Augmentation(rotation=5.0), _gen(4))
    assert (out[:, :, 10, 10] > 0.99).all()  # the rotation centre stays put
    assert out[:, :, :3, :].abs().max() == 0  # nothing comes in from the borders


# ---------------------------------------------------------------------------------------------
# Normalizer, loaders


def test_normalizer_scales_and_standardises():
    images = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
    norm = Normalizer(mean=[0.5, 0.2], std=[0.5, 0.1], device=torch.device("cpu"))
    out = norm(images)
    expected = torch.tensor([[[[-1.0, 1.0]], [[0.0, 2.0]]]])
    assert torch.allclose(out, expected, atol=1e-6)
    assert images.dtype == torch.uint8 and images[0, 0, 0, 1] == 255  # input untouched


def test_split_loader_batches_by_index():
    images = np.arange(10 * 1 * 2 * 2, dtype=np.uint8).reshape(10, 1, 2, 2)
    split = Split(labels=np.arange(10, dtype=np.int64), images=images)
    split.images.flags.writeable = False  # e.g. arrays from Ray's object store
    loader = SplitLoader(split, device=torch.device("cpu"), image_size=(2, 2), channels=1, workers=0)
    batches = list(loader.batches([torch.tensor([3, 1]), torch.tensor([9])]))
    assert [y.tolist() for _, y in batches] == [[3, 1], [9]]
    assert torch.equal(batches[0][0], torch.from_numpy(images[[3, 1]]))
    seq = list(loader.sequential(4))
    assert [len(y) for _, y in seq] == [4, 4, 2]
    assert torch.cat([y for _, y in seq]).tolist() == list(range(10))


def test_collate_drops_unreadable_items():
    good = (np.zeros((1, 2, 2), np.uint8), 4)
    x, y = collate_files([None, good, None])
    assert x.shape == (1, 1, 2, 2) and y.tolist() == [4]
    x, y = collate_files([None])
    assert len(y) == 0


# ---------------------------------------------------------------------------------------------
# BatchStream


def test_batch_stream_round_is_one_permutation():
    stream = BatchStream(10, 4, _gen(5))
    for _ in range(3):  # three classic epochs
        batches = stream.take(10)
        assert [len(b) for b in batches] == [4, 4, 2]
        assert sorted(torch.cat(batches).tolist()) == list(range(10))
    first, second = BatchStream(10, 4, _gen(5)).take(10), BatchStream(10, 4, _gen(5)).take(20)[3:]
    assert not torch.equal(torch.cat(first), torch.cat(second))  # a new permutation every epoch


def test_batch_stream_partial_rounds_never_cross_a_permutation():
    stream = BatchStream(10, 4, _gen(6))
    taken = [stream.take(3) for _ in range(10)]  # 30 samples in rounds of 3
    flat = torch.cat([b for round_ in taken for b in round_]).tolist()
    for epoch in range(3):
        assert sorted(flat[10 * epoch : 10 * epoch + 10]) == list(range(10))
    assert all(sum(len(b) for b in round_) == 3 for round_ in taken)


def test_batch_stream_state_dict_reproduces_next_batches():
    gen = _gen(7)
    stream = BatchStream(10, 4, gen)
    stream.take(6)
    state, gen_state = stream.state_dict(), gen.get_state()
    expected = stream.take(25)  # crosses two permutation boundaries

    other_gen = _gen(99)
    other = BatchStream(10, 4, other_gen)
    other.load_state_dict(state)
    other_gen.set_state(gen_state)  # the Trainer checkpoints its generator alongside
    got = other.take(25)
    assert [b.tolist() for b in got] == [b.tolist() for b in expected]
    assert state["pos"] == 6 and sorted(state["perm"].tolist()) == list(range(10))


def test_a_streamed_folder_that_a_node_cannot_read_is_one_clear_error_not_a_round_of_nothing(tmp_path):
    # the driver read the folder; a node without it (no shared mount) must not "train" on zero images
    import shutil

    from PIL import Image

    from trainables.data import create_dataset
    from trainables.errors import UserError
    from trainables.pipeline import SplitLoader

    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(root / c / f"{i}.png")
    data = create_dataset("imagefolder", root=str(root), image_size=8, val_fraction=0.25, test_fraction=0.0, max_in_memory_mb=0)
    assert not data.train.in_memory
    loader = SplitLoader(data.train, device=torch.device("cpu"), image_size=(8, 8), channels=3, workers=0)
    assert sum(len(y) for _, y in loader.sequential(4)) == len(data.train)  # readable: every image
    shutil.rmtree(root)  # as seen from a node that lacks the folder
    with pytest.raises(UserError, match=r"none of the 12 images of this pass could be read on node .* missing there.*shared mount"):
        list(loader.sequential(4))
