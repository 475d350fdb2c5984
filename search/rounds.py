"""Rounds and rungs: how much training a report stands for, and where the scheduler's rungs are.

A round is one epoch, or `report_every` training samples. `report_every: auto` (the default)
keeps one epoch for small data sets (up to AUTO_MIN_TRAIN images) and otherwise sizes the round
from a short measurement of the baseline's speed (on the Ray workers, `max_concurrent` at a time,
as the trials will train), the time budget and the number of workers, so that ASHA can try about
AUTO_FIRST_RUNG_CONFIGS configurations at its first rung, which is then one round. ASHA with promotions spends about the same time on each rung level
(n configurations x r, n/rf x rf r, ...), so with L rungs above the first one a budget of
B seconds on W workers tries n = B W / (r (L + 1)) configurations: r follows from n. B excludes
the finish phase (W finalists trained to the end, about one full trial's time, but never more than
the half the scheduler keeps for the rungs: search.schedulers). A round trains at least
MIN_EVAL_SHARE times as long as its val pass, so evaluating stays a small part of the search.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

from search.schedulers import FINISH_EARLIEST, rung_levels
from search.spec import SearchSpec
from trainables import metrics as M
from trainables.data import DataBundle

AUTO_MIN_TRAIN = 10_000  # train images up to which `auto` means one epoch per round
AUTO_FIRST_RUNG_CONFIGS = 48  # configurations the first rung should see within a time budget
AUTO_ROUND_SECONDS = 30.0  # without a time budget: a round of about this many seconds (or an epoch)
MIN_EXPLORE_SHARE = FINISH_EARLIEST  # the rungs get the time before the finish phase can start, however long a full trial is
MIN_EVAL_SHARE = 3.0  # a round trains at least 3x as long as its val evaluation takes (val <= 1/4 of a round)
SPEED_SEGMENTS = 3  # the pace is the median of this many timed stretches of training


@dataclass(frozen=True)
class RoundPlan:
    """Rounds of a search: per epoch, in a full trial (ASHA's max_t), at the first rung."""

    rounds_per_epoch: float
    total: int
    grace: int


def plan(spec: SearchSpec, n_train: int) -> RoundPlan:
    """The round plan of a spec whose `report_every` is resolved (see `resolve_report_every`)."""
    every = spec.budget.report_every
    if every == "auto":
        if n_train > AUTO_MIN_TRAIN:
            raise ValueError("report_every 'auto' must be resolved with resolve_report_every before planning rounds")
        every = None  # what `auto` resolves to for a small data set
    per_epoch = 1.0 if every is None else n_train / every
    total = max(1, math.ceil(spec.budget.max_epochs * per_epoch))
    if spec.budget.auto_rounds:
        grace = 1
    else:
        grace = max(1, min(total, round(spec.budget.grace_period * per_epoch)))
    return RoundPlan(rounds_per_epoch=per_epoch, total=total, grace=grace)


@dataclass(frozen=True)
class Speed:
    """A trial's measured pace on this machine: training samples per second and seconds per val evaluation."""

    samples_per_second: float
    eval_seconds: float


def measure_speed(spec: SearchSpec, data: DataBundle, *, batches: int = 30) -> Speed:
    """Train the baseline for SPEED_SEGMENTS x `batches` batches (after a warm-up) and evaluate val once, timed.

    The median stretch, not one: a single short one is noisy (benchmarks/README.md, "anytime")."""
    from trainables.train import Trainer

    batch = int(spec.baseline["batch_size"])
    settings = replace(spec.settings(), report_every=batch * batches)
    trainer = Trainer(spec.baseline, data, settings)
    try:
        trainer.run_round()  # warm-up: allocations, the first batches
        started = time.perf_counter()
        trainer.evaluate(trainer.val_loader)
        eval_seconds = time.perf_counter() - started
        rounds = [trainer.run_round()[M.ROUND_SECONDS] for _ in range(SPEED_SEGMENTS)]  # each: train + one val pass
    finally:
        trainer.close()
    train_seconds = max(statistics.median(rounds) - eval_seconds, 1e-6)
    return Speed(samples_per_second=batch * batches / train_seconds, eval_seconds=eval_seconds)


def measure_parallel_speed(spec: SearchSpec, data: DataBundle, *, parallel: int, batches: int = 30) -> Speed:
    """The baseline's pace as trials will have it: `parallel` Ray tasks with a trial's resources measure it
    at the same time, beside Ray's own processes (trials can train much slower than one measurement alone in the
    driver finds: benchmarks/README.md, "anytime"); the mean of their measurements."""
    import ray

    want = spec.resources
    task = ray.remote(num_cpus=want.cpu, num_gpus=want.gpu)(measure_speed)
    data_ref = ray.put(data)
    try:
        measured = ray.get([task.remote(spec, data_ref, batches=batches) for _ in range(max(1, parallel))])
    finally:
        del data_ref
    return Speed(samples_per_second=statistics.fmean(s.samples_per_second for s in measured),
                 eval_seconds=statistics.fmean(s.eval_seconds for s in measured))


def auto_round_samples(spec: SearchSpec, n_train: int, speed: Speed) -> int | None:
    """Training samples per round for `report_every: auto`, or None for one epoch."""
    epoch_seconds = n_train / speed.samples_per_second
    budget = spec.budget
    if budget.time_budget_s is None:
        round_seconds = AUTO_ROUND_SECONDS
    else:
        full_seconds = budget.max_epochs * epoch_seconds
        # the finish phase trains max_concurrent finalists to the end: what is left goes to the rungs
        worker_seconds = max(MIN_EXPLORE_SHARE * budget.time_budget_s * budget.max_concurrent,
                             (budget.time_budget_s - full_seconds) * budget.max_concurrent)
        round_seconds = worker_seconds / AUTO_FIRST_RUNG_CONFIGS
        for _ in range(20):  # r = B W / (n (L + 1)), L = log_rf(full trial / r): a fixed point
            rungs_above = max(0.0, math.log(max(full_seconds / round_seconds, 1.0), budget.reduction_factor))
            round_seconds = worker_seconds / (AUTO_FIRST_RUNG_CONFIGS * (rungs_above + 1))
    train_seconds = max(round_seconds - speed.eval_seconds, MIN_EVAL_SHARE * speed.eval_seconds)
    samples = int(train_seconds * speed.samples_per_second)
    if samples >= n_train:
        return None
    return max(samples, int(spec.baseline["batch_size"]))


def resolve_report_every(spec: SearchSpec, data: DataBundle, *, on_event: Any = None) -> SearchSpec:
    """The spec with `report_every: auto` replaced by a number of samples (or 'epoch'), stored so a resume reuses it."""
    if spec.budget.report_every != "auto":
        return spec
    n_train = len(data.train)
    if n_train <= AUTO_MIN_TRAIN:
        value: Any = "epoch"
        why = f"{n_train} train images <= {AUTO_MIN_TRAIN}"
    else:
        import ray

        parallel = spec.budget.max_concurrent if ray.is_initialized() else 1
        speed = measure_parallel_speed(spec, data, parallel=parallel) if parallel > 1 else measure_speed(spec, data)
        samples = auto_round_samples(spec, n_train, speed)
        value = "epoch" if samples is None else samples
        where = f"{parallel} at a time on the workers" if parallel > 1 else "here"
        why = (f"baseline trains {speed.samples_per_second:.0f} samples/s {where} (epoch ~{n_train / speed.samples_per_second:.0f} s, "
               f"val {speed.eval_seconds:.1f} s)")
    resolved = spec.with_budget(report_every=None if value == "epoch" else int(value), auto_rounds=value != "epoch")
    if on_event is not None:
        shown = "one epoch" if value == "epoch" else f"{value} samples ({value / n_train:.2f} epoch)"
        on_event(f"rounds: report_every auto -> {shown}; {why}")
    return resolved


def val_rounds(spec: SearchSpec, n_train: int) -> frozenset[int] | None:
    """The rounds that must evaluate val when rounds are shorter than an epoch: the rungs, as this scheduler
    and Ray's ASHA (the first round at or past grace x rf^k) count them. None when a round is an epoch: each evaluates.

    The trainer also evaluates at each epoch's end, the first round and the last; a round between carries the
    last values, so the finalists do not pay a val pass per short round (benchmarks/README.md, "Sparse val")."""
    rounds = plan(spec, n_train)
    if rounds.rounds_per_epoch <= 1.0:
        return None
    ours = rungs(spec, n_train)
    if not ours:
        return frozenset()
    rays = rung_levels(rounds.grace, spec.budget.reduction_factor, rounds.total, rounding=lambda x: math.ceil(x - 1e-9))
    return frozenset(ours) | frozenset(rays)


def rounds_per_epoch(spec: SearchSpec, n_train: int) -> float:
    return plan(spec, n_train).rounds_per_epoch


def total_rounds(spec: SearchSpec, n_train: int) -> int:
    """Reports a full-length trial makes (ASHA's max_t)."""
    return plan(spec, n_train).total


def rungs(spec: SearchSpec, n_train: int) -> tuple[int, ...]:
    """The rounds at which the spec's scheduler ranks trials (none for fifo)."""
    if spec.budget.scheduler == "fifo" or not spec.space:
        return ()
    rounds = plan(spec, n_train)
    return rung_levels(rounds.grace, spec.budget.reduction_factor, rounds.total)
