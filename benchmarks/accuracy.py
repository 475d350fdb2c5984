"""Accuracy: the searched model's test accuracy vs the spec's hand-tuned baseline, with compute stated.

For each tutorial spec that runs here without a download:
- quickstart (digits, as shipped);
- tutorial A (spaces/tutorial_a_animals.yaml) on a generated 3-class image folder
  `root/<class>/*` (coloured shapes on noise: circle / square / triangle);
- tutorial D from scratch (spaces/tutorial_d_dogs_scratch.yaml) on a generated
  6-class folder with Train/ Validation/ Test/ sub-folders (circle, square,
  triangle, cross, star, hexagon);
the image folders at image_size 32 (A) and 24 (D) with a smaller budget (`--set`-style
overrides, listed in the report).

Each search runs `run_search` (TPE + ASHA, no MLflow); its model is the one the
search hands over, the best trial's best-val checkpoint, tested once by the search's
own ending (`search.finalize`, `result.final.test`), as a user's is. The baseline (the spec's
`baseline` config) is trained with `trainables.train.fit`, keeping its best-val
epoch, twice: for the spec's `max_epochs` (its recipe), and for as many epochs
as the whole search trained in total (equal compute in epochs).

Compute: trial-epochs = passes over the training split summed over all trials;
train seconds = the trainer's epoch time (train + validation) summed over all
rounds; both per search and per baseline run. Wall time of the search includes
Ray's scheduling (Ray is started once, outside).

    python benchmarks/accuracy.py [--smoke] [--seeds 0]
"""
from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from pathlib import Path

import _common as C

A_CLASSES = ("circle", "square", "triangle")
D_CLASSES = ("circle", "square", "triangle", "cross", "star", "hexagon")
SMOKE_BUDGET = {"samples": 1, "max_epochs": 1, "grace_period": 1}


def add_args(parser) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])


# ----------------------------------------------------------------------------------------------
# Generated image folders with learnable class structure


def _polygon(cx: float, cy: float, r: float, n: int, angle: float, inner: float | None = None) -> list[tuple[float, float]]:
    points = []
    steps = n * 2 if inner else n
    for i in range(steps):
        rad = r if (inner is None or i % 2 == 0) else r * inner
        a = angle + 2 * math.pi * i / steps
        points.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return points


def draw_image(kind: str, rng: random.Random, side: int = 48):
    """A shape of random colour, size, position and rotation on a noisy background with clutter."""
    import numpy as np
    from PIL import Image, ImageDraw

    nrng = np.random.default_rng(rng.randrange(2**32))
    dark = rng.random() < 0.5  # dark background with a bright shape, or the reverse: the shape always stands out
    base = nrng.integers(20, 90, size=3) if dark else nrng.integers(165, 235, size=3)
    noise = nrng.normal(0, 12, size=(side, side, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(0, 2)):  # clutter: thin lines of random colour
        draw.line([(rng.uniform(0, side), rng.uniform(0, side)), (rng.uniform(0, side), rng.uniform(0, side))],
                  fill=tuple(rng.randrange(256) for _ in range(3)), width=1)
    colour = tuple(rng.randrange(150, 256) if dark else rng.randrange(0, 100) for _ in range(3))
    r = rng.uniform(0.24, 0.36) * side
    cx, cy = rng.uniform(r, side - r), rng.uniform(r, side - r)
    angle = rng.uniform(0, 2 * math.pi)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.polygon(_polygon(cx, cy, r * 1.15, 4, angle), fill=colour)
    elif kind == "triangle":
        draw.polygon(_polygon(cx, cy, r * 1.2, 3, angle), fill=colour)
    elif kind == "hexagon":
        draw.polygon(_polygon(cx, cy, r * 1.05, 6, angle), fill=colour)
    elif kind == "star":
        draw.polygon(_polygon(cx, cy, r * 1.25, 5, angle, inner=0.45), fill=colour)
    elif kind == "cross":
        w = r * 0.38
        for a in (angle, angle + math.pi / 2):
            dx, dy = math.cos(a), math.sin(a)
            px, py = -dy * w, dx * w
            draw.polygon([(cx - dx * r + px, cy - dy * r + py), (cx + dx * r + px, cy + dy * r + py),
                          (cx + dx * r - px, cy + dy * r - py), (cx - dx * r - px, cy - dy * r - py)], fill=colour)
    else:
        raise ValueError(kind)
    return image


def write_folder(root: Path, classes: tuple[str, ...], per_class: dict[str, int], seed: int) -> None:
    """`root/<class>/*.png` when per_class has one key "", else `root/<split>/<class>/*.png`."""
    rng = random.Random(seed)
    for split, n in per_class.items():
        for kind in classes:
            folder = root / split / kind if split else root / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_image(kind, rng).save(folder / f"{kind}_{i:04d}.png")


# ----------------------------------------------------------------------------------------------
# Specs


def specs(data_root: Path, smoke: bool) -> list[tuple[str, dict, str]]:
    """(label, raw spec, what was changed) for each workload."""
    import yaml

    out = []
    raw = C.quickstart_raw()
    changes = "as shipped"
    if smoke:
        raw["budget"].update(SMOKE_BUDGET)
        changes = "smoke budget"
    out.append(("quickstart (digits)", raw, changes))

    raw = yaml.safe_load((C.REPO / "spaces" / "tutorial_a_animals.yaml").read_text())
    raw["dataset"].update({"root": str(data_root / "shapes3"), "image_size": 32, "val_fraction": 0.2, "test_fraction": 0.2})
    raw["budget"].update({"samples": 10, "max_epochs": 20, "grace_period": 2, "reduction_factor": 3})
    changes = ("dataset.root = generated 3-class folder (400 images per class, 48 px PNG), image_size 32, val/test fraction 0.2 "
               "(0.1 in the spec: 40 test images would be too few to compare); budget samples 10, max_epochs 20 (100 in the spec), grace 2")
    if smoke:
        raw["budget"].update(SMOKE_BUDGET)
        changes += "; smoke budget"
    out.append(("tutorial A (image folder, 3 classes)", raw, changes))

    raw = yaml.safe_load((C.REPO / "spaces" / "tutorial_d_dogs_scratch.yaml").read_text())
    raw["dataset"].update({"root": str(data_root / "shapes6"), "image_size": 24})
    raw["budget"].update({"samples": 8, "max_epochs": 8, "grace_period": 2, "reduction_factor": 3})
    changes = ("dataset.root = generated 6-class Train/Validation/Test folder (100 / 25 / 25 images per class), image_size 24 "
               "(224 in the spec; its from-scratch net costs ~5 s per epoch of 900 images at 32 px on one core here); "
               "budget samples 8 (16), max_epochs 8 (20), grace 2")
    if smoke:
        raw["budget"].update(SMOKE_BUDGET)
        changes += "; smoke budget"
    out.append(("tutorial D scratch (Train/Validation/Test, 6 classes)", raw, changes))
    return out


def baseline(spec, data, epochs: int) -> dict:
    from trainables.train import fit

    fitted = fit(dict(spec.baseline), data, spec.settings(max_epochs=epochs))
    return {"test": fitted.test["acc"], "val": fitted.best_metrics["val_acc"], "epochs": epochs,
            "seconds": sum(h["epoch_seconds"] for h in fitted.history)}


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], add_args)
    if args.smoke:
        args.seeds = [0]
    C.quiet_ray_env()
    work = Path(tempfile.mkdtemp(prefix="hpsearch-bench-acc-"))
    os.environ["HPSEARCH_CACHE"] = str(work / "cache")  # decoded folders and statistics stay in the temporary folder
    from search import results as R
    from search.cluster import connect
    from search.spec import parse_spec
    from search.tuner import run_search
    from trainables.data import create_dataset

    scale = 0.1 if args.smoke else 1.0
    write_folder(work / "data" / "shapes3", A_CLASSES, {"": max(10, int(400 * scale))}, seed=100)
    write_folder(work / "data" / "shapes6", D_CLASSES, {"Train": max(10, int(100 * scale)), "Validation": max(4, int(25 * scale)),
                                                         "Test": max(4, int(25 * scale))}, seed=200)
    rows, summary, changes_list = [], [], []
    try:
        with C.LoadWatch() as load:
            with C.Stopwatch() as start:
                connect(None)
            for label, raw, changes in specs(work / "data", args.smoke):
                changes_list.append(f"- {label}: {changes}")
                gains, gains_eq = [], []
                for seed in args.seeds:
                    raw = {**raw, "seed": seed, "name": f"bench-acc-{len(changes_list)}"}
                    spec = parse_spec(raw, f"benchmarks/accuracy.py:{label}")
                    data = create_dataset(spec.dataset, **spec.dataset_options)
                    with C.Stopwatch() as wall:
                        result = run_search(spec, name=f"acc-{len(changes_list)}-s{seed}", storage=str(work / "runs"), track=False, on_event=None)
                    trial_epochs = sum(r.rounds for r in result.records)  # a round is an epoch in these specs
                    train_seconds = sum(h.get("epoch_seconds", 0.0) for r in result.records for h in r.history)
                    if result.final is None:
                        raise SystemExit(f"accuracy.py: {label} seed {seed}: the search handed over no model ({result.final_error or 'interrupted'})")
                    test = C.final_test_acc(result)  # the handed-over model, tested once by the search's ending
                    base = baseline(spec, data, spec.budget.max_epochs)
                    equal = baseline(spec, data, max(trial_epochs, spec.budget.max_epochs))
                    gains.append(test - base["test"])
                    gains_eq.append(test - equal["test"])
                    rows.append([
                        label, str(seed), f"{len(result.records)} ({result.counts.get(R.Outcome.PRUNED, 0)} pruned)", trial_epochs, train_seconds, wall.seconds,
                        f"{result.best.best_value:.3f}", f"**{test:.3f}**",
                        f"{base['epochs']} / {base['seconds']:.0f} s", f"{base['val']:.3f}", f"{base['test']:.3f}",
                        f"{equal['epochs']} / {equal['seconds']:.0f} s", f"{equal['test']:.3f}",
                    ])
                    print(f"{label} seed {seed}: search test {test:.3f} ({trial_epochs} trial-epochs), baseline {base['test']:.3f}, "
                          f"baseline at equal epochs {equal['test']:.3f}", flush=True)
                n = len(data.test)
                summary.append([label, n, f"{C.median(gains) * 100:+.1f}", f"{C.median(gains_eq) * 100:+.1f}",
                                f"{sum(g >= 0 for g in gains_eq)} of {len(gains_eq)}"])
    finally:
        C.kill_own_ray()
        shutil.rmtree(work, ignore_errors=True)
    table = C.md_table(["spec", "seed", "search trials", "search trial-epochs", "search train s", "search wall s", "best trial val acc",
                        "searched model test acc", "baseline (recipe) epochs / train s", "baseline val acc", "baseline test acc",
                        "baseline at equal epochs: epochs / train s", "its test acc"], rows)
    summ = C.md_table(["spec", "test images", "search − baseline (recipe), points, median", "search − baseline at equal epochs, points, median",
                       "seeds where search ≥ equal-epoch baseline"], summary)
    setup = "\n".join([
        "Specs and what was changed for this machine (no downloads; image folders generated with PIL, learnable: the "
        "class is the shape, colour / size / position / rotation / background / clutter are random):",
        *changes_list,
        "",
        "The searched model is the best trial's best-validation checkpoint; test is touched once per model. `baseline at equal "
        "epochs` trains the baseline config for as many epochs as the search's trials trained in total (at least the recipe's), "
        "keeping its best-validation epoch: the same number of passes over the training data as the whole search. Train "
        "seconds are not equal across the two (searched configs differ in width and batch size): both are shown. One torch "
        f"thread per run; the search runs 2 trials at a time on the 2 cores, the baseline runs alone. Ray start-up ({start.seconds:.0f} s) not counted.",
    ])
    C.write_report("accuracy", "Accuracy: searched model vs the spec's baseline on test, with compute stated",
                   [setup, table, summ], args.out, smoke=args.smoke, load=load)


if __name__ == "__main__":
    main()
