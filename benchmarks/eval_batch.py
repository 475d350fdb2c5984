"""The val pass's batch size on a CPU: seconds to evaluate 5,000 28x28 grey images, one thread.

Every round of a trial ends with a val pass, and `report_every: auto` floors a round at
search.rounds.MIN_EVAL_SHARE x that pass, so its cost sets how many configurations a
time budget can try (benchmarks/README.md, "val pass"). Measured for the three widths of the
benchmark space's two-block CNN at batch sizes 64-1024, alone and with two processes evaluating
at once (two trials on a 2-core machine); the median of `--reps` passes after one warm-up.

    python benchmarks/eval_batch.py [--smoke] [--reps 3] [--images 5000]
"""
from __future__ import annotations

import multiprocessing
import statistics
import time
from typing import Any

import _common as C

WIDTHS = ("8-16", "16-32", "32-64")
BATCHES = (64, 128, 256, 512, 1024)


def time_passes(images: int, reps: int) -> dict[tuple[str, int], float]:
    """Median seconds of one val pass per (width, batch size), in this process with one thread."""
    import torch

    from trainables.models import create_model

    torch.set_num_threads(1)
    x = torch.randn(images, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out: dict[tuple[str, int], float] = {}
    for width in WIDTHS:
        model = create_model("cnn", num_classes=10, in_channels=1, image_size=[28, 28], channels=width, hidden=128,
                             dropout=0.2, batch_norm=True).eval()
        for batch in BATCHES:
            seconds = []
            with torch.no_grad():
                for rep in range(reps + 1):
                    started = time.perf_counter()
                    for chunk in x.split(batch):
                        model(chunk)
                    if rep:  # the first pass warms up
                        seconds.append(time.perf_counter() - started)
            out[(width, batch)] = statistics.median(seconds)
    return out


def _worker(args: tuple[int, int]) -> dict[tuple[str, int], float]:
    return time_passes(*args)


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], lambda p: (p.add_argument("--reps", type=int, default=3),
                                                           p.add_argument("--images", type=int, default=5000)))
    images, reps = (500, 1) if args.smoke else (args.images, args.reps)
    with C.LoadWatch() as load:
        alone = time_passes(images, reps)
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pair = pool.map(_worker, [(images, reps)] * 2)
    together = {key: statistics.mean(p[key] for p in pair) for key in alone}
    rows: list[list[Any]] = []
    for width in WIDTHS:
        for label, times in (("alone", alone), ("2 at once", together)):
            best = min(BATCHES, key=lambda b: times[(width, b)])
            rows.append([width, label, *[f"{times[(width, b)]:.3f}" for b in BATCHES], str(best),
                         f"{times[(width, 1024)] / times[(width, 128)]:.2f}"])
    table = C.md_table(["channels", "processes", *[f"batch {b} s" for b in BATCHES], "fastest", "1024 / 128"], rows)
    C.write_report("eval_batch", "Val pass batch size on a CPU", [
        f"Seconds per val pass of {images:,} 1x28x28 images through the benchmark space's two-block CNN "
        f"(batch_norm, hidden 128), one thread per process, median of {reps} passes after a warm-up; "
        "`2 at once`: two processes evaluating at the same time (their mean).", table,
    ], args.out, smoke=args.smoke, load=load)


if __name__ == "__main__":
    main()
