"""The input pipeline: batches of uint8 tensors → augmented, normalised float tensors.

In-memory splits are batched by tensor indexing (on the GPU when the trial has
one); streamed splits decode in `DataLoader` workers. Augmentation runs
batch-wise on tensors (flip, rotation, translation, padded random crop), train
only, drawn from a seeded generator so a run is reproducible.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trainables.data import Split, decode_image
from trainables.errors import UserError


@dataclass(frozen=True)
class Augmentation:
    """Train-time augmentation; all off is the identity.

    hflip: flip left-right with probability 0.5.
    rotation: max degrees of a uniform random rotation (tutorial B: 10).
    translate: max shift as a fraction of the image side.
    crop_padding: pixels of zero padding for a random crop back to size.
    """

    hflip: bool = False
    rotation: float = 0.0
    translate: float = 0.0
    crop_padding: int = 0

    @property
    def active(self) -> bool:
        return self.hflip or self.rotation > 0 or self.translate > 0 or self.crop_padding > 0


def augment(x: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Apply `aug` to a float batch (N, C, H, W) with values in [0, 1]; zeros fill the borders."""
    if not aug.active or x.shape[0] == 0:
        return x
    n, _, h, w = x.shape
    rand = lambda *shape: torch.rand(*shape, generator=generator).to(x.device)  # noqa: E731
    if aug.hflip:
        flip = rand(n) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if aug.rotation > 0 or aug.translate > 0:
        angle = (rand(n) * 2 - 1) * math.radians(aug.rotation)
        shift = (rand(n, 2) * 2 - 1) * 2 * aug.translate  # normalised coords span 2
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if aug.crop_padding > 0:
        p = aug.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = (rand(n) * (2 * p + 1)).long().clamp(max=2 * p)
        dx = (rand(n) * (2 * p + 1)).long().clamp(max=2 * p)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (n, w)
        idx_n = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return x


class Normalizer:
    """uint8 (N, C, H, W) → float, scaled to [0, 1], optionally augmented, then standardised."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor, aug: Augmentation | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.float() / 255.0  # never in place: the caller's tensor stays as it was
        if aug is not None and generator is not None:
            x = augment(x, aug, generator)
        return (x - self.mean) / self.std


class _FileDataset(torch.utils.data.Dataset):
    """Decodes one file per item; unreadable files yield None and are dropped by `collate_files`."""

    def __init__(self, split: Split, size: tuple[int, int], channels: int) -> None:
        assert split.files is not None
        self.files, self.labels, self.size, self.channels = split.files, split.labels, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int] | None:
        image = decode_image(self.files[i], self.size, self.channels)
        return None if image is None else (image, int(self.labels[i]))


def collate_files(items: list[tuple[np.ndarray, int] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of decoded files as tensors; the unreadable ones (None) are left out (an empty batch if all were)."""
    good = [it for it in items if it is not None]
    if not good:
        return torch.zeros((0,), dtype=torch.uint8), torch.zeros((0,), dtype=torch.int64)
    return torch.from_numpy(np.stack([g[0] for g in good])), torch.tensor([g[1] for g in good], dtype=torch.int64)


class SplitLoader:
    """Batches of (uint8 images, int64 labels) from one split, on `device`.

    In-memory splits are copied to the device once (when `resident`) and indexed;
    file splits stream through a DataLoader with `workers` processes.
    """

    def __init__(
        self, split: Split, *, device: torch.device, image_size: tuple[int, int], channels: int,
        resident: bool = False, workers: int = 2,
    ) -> None:
        self.split, self.device, self.workers = split, device, workers
        self.size, self.channels = image_size, channels
        self._images: torch.Tensor | None = None
        self._labels = torch.from_numpy(np.ascontiguousarray(split.labels))
        if split.images is not None:
            images = torch.from_numpy(np.array(split.images, copy=True)) if not split.images.flags.writeable else torch.from_numpy(split.images)
            self._images = images.to(device) if resident else images
            if resident:
                self._labels = self._labels.to(device)

    def __len__(self) -> int:
        return len(self.split)

    def batches(self, index_batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches whose sample indices are `index_batches`, in that order."""
        if self._images is not None:
            for idx in index_batches:
                idx_dev = idx.to(self._images.device)
                x, y = self._images[idx_dev], self._labels[idx_dev]
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        loader = torch.utils.data.DataLoader(
            _FileDataset(self.split, self.size, self.channels),
            batch_sampler=[idx.tolist() for idx in index_batches],
            num_workers=self.workers,
            collate_fn=collate_files,
            pin_memory=self.device.type == "cuda",
        )
        yielded = 0
        for x, y in loader:
            if len(y):
                yielded += 1
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if not yielded and index_batches:
            # the files were read when the data set was built (on the driver): here, none is readable
            import socket

            first = self.split.files[int(index_batches[0][0])] if self.split.files else "?"
            raise UserError(
                f"none of the {sum(len(i) for i in index_batches)} images of this pass could be read on node "
                f"{socket.gethostname()} (first: {first}, {'exists' if os.path.exists(first) else 'missing'} there); "
                "the image folder must be at the same path on every node (a shared mount), or small enough to "
                "be held in memory (dataset.max_in_memory_mb)")

    def sequential(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every sample once, in order (evaluation)."""
        return self.batches(torch.arange(len(self)).split(batch_size))


class BatchStream:
    """Endless shuffled index batches over `n` samples, one permutation after another.

    A batch never crosses a permutation boundary, so a round of exactly `n`
    samples is a classic epoch. The position is part of checkpoints.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self._perm = torch.randperm(n, generator=generator)
        self._pos = 0

    def take(self, samples: int) -> list[torch.Tensor]:
        """Index batches covering `samples` samples (the last one may be cut at a boundary)."""
        out: list[torch.Tensor] = []
        remaining = samples
        while remaining > 0:
            if self._pos >= self.n:
                self._perm = torch.randperm(self.n, generator=self.generator)
                self._pos = 0
            step = min(self.batch_size, self.n - self._pos, remaining)
            out.append(self._perm[self._pos : self._pos + step])
            self._pos += step
            remaining -= step
        return out

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"perm": self._perm.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self._perm, self._pos = state["perm"], int(state["pos"])
