"""How much early rankings say about final ones, from a curves file of benchmarks/record_curves.py.

For each rung level r (grace 1 round, reduction factor 4: rounds 1, 4, 16, ... below the last), the
Spearman rank correlation across configurations between val accuracy after round r and after the
last round (a configuration that diverged or stopped early counts its last value). A workload whose
first-rung correlation is below 0.5 has curves that cross: a method that wins there only by ranking
early is caught (benchmarks/README.md, "anytime", second workload). Writes a markdown table to stdout
and, with --out, OUT/runs/record_curves/ranks_NAME.md.

    python benchmarks/curve_ranks.py benchmarks/results/runs/record_curves/curves_glyphs_small.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common as C


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho (scipy's, ties averaged)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def ranks(curves: dict) -> list[tuple[int, float, int]]:
    """(round, Spearman with the final val, configurations) for each rung level."""
    configs = [c for c in curves["configs"] if c.get("val_acc")]
    total = max(len(c["val_acc"]) for c in configs)
    final = [c["val_acc"][-1] for c in configs]
    from search.schedulers import rung_levels

    rows = []
    for r in rung_levels(1, 4, total):
        at = [c["val_acc"][min(r, len(c["val_acc"])) - 1] for c in configs]
        rows.append((r, spearman(at, final), len(configs)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", help="a curves_NAME.json of record_curves.py")
    parser.add_argument("--out", default=None, help="also write OUT/runs/record_curves/ranks_NAME.md")
    args = parser.parse_args()
    curves = json.loads(Path(args.curves).read_text())
    rows = ranks(curves)
    per_epoch = curves.get("rounds_per_epoch") or 1.0
    table = C.md_table(["rung (round)", "epochs", "Spearman with the final val acc", "configurations"],
                       [[r, C.fmt(r / per_epoch, 2), C.fmt(rho, 3), n] for r, rho, n in rows])
    text = (f"Curves: `{args.curves}` ({curves.get('name')}, {curves.get('total_rounds')} rounds of "
            f"{curves.get('report_every') or 'an epoch'}, {curves.get('n_train')} train images).\n\n{table}\n")
    print(text)
    if args.out:
        path = C.run_dir(args.out, "record_curves") / f"ranks_{curves.get('name')}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Rank correlation of early and final val accuracy\n\n" + "\n".join(C.machine_lines()) + "\n\n" + text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
