"""Training throughput (images/s) of hpsearch's input pipeline vs the tutorials' DataLoader vs pure compute.

Per shape (MNIST 1x28x28 with tutorial C's net, CIFAR-10 3x32x32 with tutorial E's
net), on synthetic uint8 images (no download), batch 64, Adam, one torch thread:

- pure compute: forward + backward + step on batches already normalised and in
  memory (the ceiling any pipeline can reach);
- hpsearch: `trainables.train.Trainer.run_round` (BatchStream shuffled index
  batches → SplitLoader → Normalizer, augmentation off, the Trainer's step with
  its lr schedule and loss/accuracy accounting; validation on 64 images);
- tutorial DataLoader: a torchvision-style Dataset that turns each stored image
  into a PIL image and applies `transforms.ToTensor()` + `Normalize`, through
  `DataLoader(batch_size=64, shuffle=True, num_workers=0 | 2)` (workers started
  each epoch, as in the tutorials).

Each variant trains one epoch over the same images, interleaved (order reversed
every other repetition), `--reps` times. Reported: images per second of wall
time, and images per CPU-second (this process plus its DataLoader workers), which
other processes' load on a shared machine barely moves; the ratio to pure compute
is the median of per-repetition ratios (neighbours in time).

    python benchmarks/data_pipeline.py [--smoke] [--reps 5] [--images 6000]
"""
from __future__ import annotations

import os
import time

import _common as C

TARGET = 0.9
BATCH = 64
SHAPES = {  # name: (channels, side, model hparams of the tutorial's net)
    "MNIST 1x28x28, tutorial C net": (1, 28, {"channels": "8-16", "hidden": 0}),
    "CIFAR-10 3x32x32, tutorial E net": (3, 32, {"channels": "32-64", "hidden": 512}),
}
HPARAMS = {
    "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "batch_size": BATCH,
    "label_smoothing": 0.0, "schedule": "none", "step_size": 5, "gamma": 0.1, "hflip": False, "rotation": 0.0,
    "translate": 0.0, "crop_padding": 0, "width_mult": 1.0, "kernel_size": 3, "pool": True, "batch_norm": False, "dropout": 0.0,
}


def add_args(parser) -> None:
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--images", type=int, default=6000, help="training images per epoch at MNIST shape (a third of it at CIFAR shape)")


def synthetic(n: int, channels: int, side: int, seed: int = 0):
    import numpy as np

    from trainables.data import DataBundle, Split

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n + 64, channels, side, side), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n + 64).astype(np.int64)
    mean = tuple(float(m) for m in (images[:n] / 255.0).mean(axis=(0, 2, 3)))
    std = tuple(float(s) for s in (images[:n] / 255.0).std(axis=(0, 2, 3)))
    return DataBundle(
        name="synthetic", train=Split(labels=labels[:n], images=images[:n]), val=Split(labels=labels[n:], images=images[n:]),
        test=None, class_names=[str(i) for i in range(10)], channels=channels, image_size=(side, side), mean=mean, std=std,
    )


def new_model(data, model_hp):
    import torch

    from trainables.models import create_model

    torch.manual_seed(0)
    model = create_model("cnn", num_classes=10, in_channels=data.channels, image_size=list(data.image_size),
                         **{k: v for k, v in {**HPARAMS, **model_hp}.items() if k in ("channels", "hidden", "width_mult", "kernel_size", "pool", "batch_norm", "dropout")})
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its reaped children, e.g. DataLoader workers)."""
    t = os.times()
    return time.perf_counter(), time.process_time() + t.children_user + t.children_system


def since(start: tuple[float, float], n: int) -> tuple[int, float, float]:
    wall, cpu = clock()
    return n, wall - start[0], cpu - start[1]


def pure_compute(data, model_hp) -> tuple[int, float, float]:
    import torch
    import torch.nn.functional as F

    model, opt = new_model(data, model_hp)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x_all = (torch.from_numpy(data.train.images).float() / 255.0 - mean) / std
    y_all = torch.from_numpy(data.train.labels)
    batches = [(x.contiguous(), y) for x, y in zip(x_all.split(BATCH), y_all.split(BATCH))]  # ready before the clock
    model.train()
    t0 = clock()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return since(t0, len(y_all))


def hpsearch_pipeline(data, model_hp) -> tuple[int, float, float]:
    from trainables.train import RunSettings, Trainer

    trainer = Trainer({**HPARAMS, **model_hp}, data, RunSettings(model="cnn", max_epochs=1, threads=1))
    t0 = clock()
    trainer.run_round()  # one epoch: shuffled index batches → SplitLoader → Normalizer → step; val on 64 images
    out = since(t0, len(data.train))
    trainer.close()
    return out


class TutorialDataset:
    """What torchvision's MNIST / CIFAR10 do per item: array → PIL image → transform."""

    def __init__(self, images, labels, transform) -> None:
        self.channels = images.shape[1]
        self.images = images[:, 0] if self.channels == 1 else images.transpose(0, 2, 3, 1).copy()  # HW / HWC like torchvision
        self.labels, self.transform = labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        image = Image.fromarray(self.images[i], mode="L" if self.channels == 1 else "RGB")
        return self.transform(image), int(self.labels[i])


def tutorial_dataloader(data, model_hp, workers: int) -> tuple[int, float, float]:
    import torch
    import torch.nn.functional as F
    from torchvision import transforms

    model, opt = new_model(data, model_hp)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])
    loader = torch.utils.data.DataLoader(TutorialDataset(data.train.images, data.train.labels, transform),
                                         batch_size=BATCH, shuffle=True, num_workers=workers)
    model.train()
    t0 = clock()
    n = 0
    for x, y in loader:  # includes starting the workers, as every tutorial epoch does
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    del loader  # workers exit and are reaped: their CPU time is in os.times().children_*
    return since(t0, n)


VARIANTS = {
    "pure compute (ready batches)": pure_compute,
    "hpsearch (Trainer.run_round: SplitLoader + Normalizer)": hpsearch_pipeline,
    "tutorial DataLoader, PIL + ToTensor, num_workers=0": lambda d, m: tutorial_dataloader(d, m, 0),
    "tutorial DataLoader, PIL + ToTensor, num_workers=2": lambda d, m: tutorial_dataloader(d, m, 2),
}


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], add_args)
    if args.smoke:
        args.reps, args.images = 1, 256
    import torch

    torch.set_num_threads(1)
    rows, summary = [], []
    pure_name, hp_name = list(VARIANTS)[:2]
    with C.LoadWatch() as load:
        for shape, (channels, side, model_hp) in SHAPES.items():
            images = args.images if channels == 1 else max(256, args.images // 3)
            data = synthetic(images, channels, side)
            warm = synthetic(256, channels, side, seed=1)
            for fn in VARIANTS.values():  # warm-up: allocator, kernels, imports
                fn(warm, model_hp)
            runs: dict[str, list[tuple[int, float, float]]] = {name: [] for name in VARIANTS}
            for rep in range(args.reps):
                names = list(VARIANTS) if rep % 2 == 0 else list(reversed(VARIANTS))
                for name in names:
                    runs[name].append(VARIANTS[name](data, model_hp))
                print(f"{shape}: rep {rep + 1} done", flush=True)
            wall_speed = {k: [n / w for n, w, _ in v] for k, v in runs.items()}
            cpu_speed = {k: [n / c for n, _, c in v] for k, v in runs.items()}
            for name in VARIANTS:
                wall_ratio = C.median(a / b for a, b in zip(wall_speed[name], wall_speed[pure_name]))
                cpu_ratio = C.median(a / b for a, b in zip(cpu_speed[name], cpu_speed[pure_name]))
                rows.append([shape, name, C.median(wall_speed[name]), f"{wall_ratio:.3f}", C.median(cpu_speed[name]), f"{cpu_ratio:.3f}",
                             " / ".join(f"{s:,.0f}" for s in wall_speed[name])])
            hp_cpu = C.median(a / b for a, b in zip(cpu_speed[hp_name], cpu_speed[pure_name]))
            hp_wall = C.median(a / b for a, b in zip(wall_speed[hp_name], wall_speed[pure_name]))
            summary.append([shape, f"{hp_cpu:.3f}", f"{hp_wall:.3f}", f"≥ {TARGET} ({'met' if hp_cpu >= TARGET else '**missed**'})"])
    table = C.md_table(["shape", "pipeline", "images/s wall (median)", "× pure compute (wall)", "images per CPU-s (median)",
                        "× pure compute (CPU)", "images/s wall, each repetition"], rows)
    setup = (
        f"Synthetic uint8 images with random labels (throughput does not depend on content), {args.images} training "
        f"images per epoch at MNIST shape and {max(256, args.images // 3)} at CIFAR shape, batch {BATCH}, Adam, "
        "one torch thread in the training process (one trial per core, as with `resources.cpu: 1`). The DataLoader's "
        "workers are extra processes on the machine's other core. hpsearch's number includes its validation pass over "
        "64 images and its per-batch loss/accuracy accounting. Tutorial C's net: conv 8 → conv 16 → FC 10; tutorial E's: "
        "conv 32 → conv 64 → FC 512 → FC 10."
    )
    target = C.md_table(["shape", "hpsearch / pure compute (CPU time)", "same, wall time", "target (judged on CPU time)"], summary)
    C.write_report("data_pipeline", "Input pipeline throughput: hpsearch vs tutorial DataLoader vs pure compute",
                   [setup, table, target], args.out, smoke=args.smoke, load=load)


if __name__ == "__main__":
    main()
