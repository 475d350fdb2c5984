"""Rebuild benchmarks/anytime.py's summary from its raw files (OUT/runs/anytime/WORKLOAD_seedS_METHOD.json).

Writes, for the main workload, OUT/anytime_summary.json (one entry per method and seed: test_acc,
best_val, trial_epochs, train_share, completed, and the fidelity levels reached) and OUT/anytime.md
(the tables benchmarks/README.md quotes); another workload W gets OUT/runs/anytime/W_summary.json
and a section of anytime.md. A seed counts for a method only when its raw file exists; the paired
comparisons use the seeds both methods have (benchmarks/paired.py). Nothing here runs a search.

    python benchmarks/anytime.py --summarize
"""
from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

import _common as C
import paired as P

MAIN_WORKLOAD = "glyphs"
LEVELS = ("first_rung", "one_epoch", "quarter_max_t", "max_t")
ENTRY_KEYS = ("test_acc", "best_val", "trial_epochs", "train_share", "completed")


def load_raw(out: Path) -> list[dict[str, Any]]:
    """Every format-2 raw file under OUT/runs/anytime/, without its event lists (kept for the plot as traces)."""
    folder = C.run_dir(out, "anytime")
    records = []
    for path in sorted(folder.glob("*_seed*_*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if record.get("benchmark") == "anytime" and record.get("format") == 2:
            record.pop("events", None)
            record.pop("configs", None)
            record["file"] = path.name
            records.append(record)
    return records


def _method_order(methods: set[str]) -> list[str]:
    import anytime

    known = [m for m in anytime.METHODS if m in methods]
    return known + sorted(methods - set(known))


def workload_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary JSON of one workload's raw records."""
    machines = {r["machine"] for r in records}
    commits = {r["commit"] for r in records}
    first = records[0]
    methods: dict[str, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (r["method"], r["seed"])):
        entry = {k: r.get(k) for k in ENTRY_KEYS}
        entry.update(levels=r.get("levels"), trials=r.get("trials"), handed_over_epochs=r.get("handed_over_epochs"))
        if len(machines) > 1:
            entry["machine"] = r["machine"]
        if len(commits) > 1:
            entry["commit"] = r["commit"]
        methods.setdefault(r["method"], {})[str(r["seed"])] = entry
    return {
        "machine": first["machine"] if len(machines) == 1 else "per seed (see each entry)",
        "commit": first["commit"] if len(commits) == 1 else "per seed (see each entry)",
        "budget_s": first["budget_s"], "workers": first["workers"], "max_epochs": first["max_epochs"],
        "workload": first["workload"], "data": first.get("data", {}).get("summary"),
        "methods": {m: methods[m] for m in _method_order(set(methods))},
    }


def _values(entries: dict[str, Any], key: str) -> dict[str, float]:
    return {s: float(e[key]) for s, e in entries.items() if isinstance(e.get(key), (int, float)) and not isinstance(e.get(key), bool)
            and math.isfinite(float(e[key]))}


def _med(values: list[float], digits: int = 1) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return C.fmt(statistics.median(values), digits) if values else "-"


def table(summary: dict[str, Any], reference: str = "hpsearch") -> str:
    """Per method: seeds, test acc median [IQR], paired median difference to `reference` [95% CI] and p,
    trial-epochs, trials per fidelity level (medians), train share, completed hand-overs."""
    methods = summary["methods"]
    ref = _values(methods.get(reference, {}), "test_acc")
    rows = []
    for method, entries in methods.items():
        acc = _values(entries, "test_acc")
        med, q1, q3 = P.median_iqr(acc.values())
        diff = "(reference)" if method == reference else P.paired(ref, acc).text() if ref else "-"
        levels = " / ".join(_med([float((e.get("levels") or {}).get(lv, float("nan"))) for e in entries.values()], 0) for lv in LEVELS)
        completed = sum(bool(e.get("completed")) for e in entries.values())
        rows.append([f"`{method}`", len(entries), f"{C.fmt(med, 4)} [{C.fmt(q1, 4)}, {C.fmt(q3, 4)}]", diff,
                     _med(list(_values(entries, "trial_epochs").values())), levels,
                     _med(list(_values(entries, "train_share").values()), 2), f"{completed}/{len(entries)}"])
    return C.md_table(["method", "seeds", "test acc, median [IQR]", f"{reference} − method: median [95% CI], Wilcoxon p",
                       "trial-epochs (median)", "trials reaching first rung / 1 epoch / ¼ max_t / max_t (medians)",
                       "train share (median)", "hand-over completed max_epochs"], rows)


def plot(records: list[dict[str, Any]], out: Path, workload: str) -> Path | None:
    """Median over seeds of the best val so far, per method, over the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import anytime
    import matplotlib.pyplot as plt

    mine = [r for r in records if r["workload"] == workload]
    if not mine:
        return None
    budget = mine[0]["budget_s"]
    grid = [budget * i / 100 for i in range(101)]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    lows = []
    for method in _method_order({r["method"] for r in mine}):
        traces = [r["trace"] for r in mine if r["method"] == method and r.get("trace")]
        if not traces:
            continue
        curve = []
        for t in grid:
            at = [max((v for s, v in tr if s <= t), default=float("nan")) for tr in traces]
            at = [v for v in at if v == v]
            curve.append(statistics.median(at) if len(at) == len(traces) else float("nan"))
        lows += [v for v in curve if v == v]
        ax.plot([t / 60 for t in grid], curve, label=f"{method} ({len(traces)} seeds)", color=anytime.COLOURS.get(method),
                linewidth=2.5 if method == "hpsearch" else 1.3)
    if lows:
        top = max(lows)
        ax.set_ylim(max(min(lows), top - 0.08), top + 0.005)
    ax.set_xlabel("wall time of the method (minutes)")
    ax.set_ylabel("best val accuracy so far (median over seeds)")
    ax.set_title(f"{workload}: best val over wall time, {mine[0]['workers']} workers")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = C.run_dir(out, "anytime") / f"{workload}_best_val_over_time.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summarize(out: Path) -> Path:
    """Rebuild the summaries and anytime.md from every raw file; returns anytime.md's path."""
    import anytime

    out = Path(out)
    records = load_raw(out)
    workloads = sorted({r["workload"] for r in records}, key=lambda w: (w != MAIN_WORKLOAD, w))
    sections = [
        "Built by `python benchmarks/anytime.py --summarize` from the raw files in `runs/anytime/` (one per workload, seed and "
        "method); the protocol, the methods' set-up and how to read each column: benchmarks/README.md, \"anytime\". "
        f"Declared seeds: {anytime.SEEDS[0]}-{anytime.SEEDS[-1]} for every method, {anytime.ABLATION_SEEDS[0]}-"
        f"{anytime.ABLATION_SEEDS[-1]} for the ablations and the second workload.",
    ]
    for workload in workloads:
        mine = [r for r in records if r["workload"] == workload]
        summary = workload_summary(mine)
        name = "anytime_summary.json" if workload == MAIN_WORKLOAD else f"runs/anytime/{workload}_summary.json"
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
        picture = plot(records, out, workload)
        seeds = sorted({r["seed"] for r in mine})
        sections += [
            f"## {workload}",
            f"Data: {summary['data']}; {summary['budget_s']:g} s per method, {summary['workers']} workers, max_epochs "
            f"{summary['max_epochs']}; seeds run: {', '.join(map(str, seeds))}; machine: {summary['machine']}; commit: "
            f"{summary['commit']}. Summary JSON: [{name}]({name}).",
            table(summary),
            *([f"[Best val over wall time, median over seeds]({os.path.relpath(picture, out)})."] if picture else []),
            C.md_table(["method", "set-up"], [[f"`{m}`", anytime.LABELS.get(m, m)] for m in summary["methods"]]),
        ]
    smoke = any(r.get("smoke") for r in records)
    return C.write_report("anytime", "Search quality per wall-clock budget at matched fidelity", sections, out, smoke=smoke, load=None)
