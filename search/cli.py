"""`hpsearch` command line: train, run, resume, results, list, export, predict, ui.

User mistakes print one line `hpsearch: error: ...` and exit non-zero (2 for
bad input, 3 for a diverged training, 130 for Ctrl-C); no traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from search.storage import DEFAULT_STORAGE
from trainables.errors import UserError


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _config_line(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(config.items()))


# ----------------------------------------------------------------------------------------------
# train


def cmd_train(args: argparse.Namespace) -> int:
    from search.spec import load_spec
    from trainables import metrics as M
    from trainables.checkpoint import save_checkpoint
    from trainables.errors import DivergedError
    from trainables.files import CHECKPOINT_FILE
    from trainables.train import fit

    spec = load_spec(args.spec, args.set or [])
    data = spec.load_data()
    print(f"data: {data.summary()}")
    settings = spec.settings(max_epochs=args.epochs)
    print(f"training {spec.model} with the baseline of {spec.path} for {settings.max_epochs} epochs: {_config_line(spec.baseline)}")
    started = time.perf_counter()

    def show(m: dict[str, Any]) -> None:
        top5 = f" top5 {m[M.VAL_TOP5]:.4f}" if M.VAL_TOP5 in m else ""
        print(f"epoch {m[M.EPOCH]:>6g} | train loss {m[M.TRAIN_LOSS]:.4f} acc {m[M.TRAIN_ACC]:.4f} | "
              f"val loss {m[M.VAL_LOSS]:.4f} acc {m[M.VAL_ACC]:.4f}{top5} | lr {m[M.LR]:.3g} | {m[M.ROUND_SECONDS]:.1f}s", flush=True)

    result = fit(spec.baseline, data, settings, on_round=show)
    if result.status == M.STATUS_DIVERGED:
        raise DivergedError(f"training diverged (non-finite loss) at epoch {result.history[-1][M.EPOCH]:g} with lr={spec.baseline['lr']}; lower baseline.lr (--set baseline.lr=...)")
    out = Path(args.out) if args.out else Path(DEFAULT_STORAGE) / f"{spec.name}-train" / CHECKPOINT_FILE
    path = save_checkpoint({**result.best_state, "test": _jsonable(result.test)}, out)
    best = result.best_metrics
    print(f"best {spec.metric} {best[spec.metric]:.4f} at epoch {best[M.EPOCH]:g}; checkpoint: {path}")
    if result.test is not None:
        t = result.test
        print(f"test (evaluated once, best-val weights): acc {t['acc']:.4f} loss {t['loss']:.4f}" + (f" top5 {t['top5']:.4f}" if "top5" in t else ""))
        print("per-class test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in t["per_class"].items()))
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _jsonable(test: dict[str, Any] | None) -> dict[str, Any] | None:
    if test is None:
        return None
    return {k: v for k, v in test.items() if k in ("loss", "acc", "top5", "per_class", "n")}


# ----------------------------------------------------------------------------------------------
# run / resume / results / list


def print_summary(result: Any) -> None:
    """The end of `hpsearch run` / `resume`: outcomes, the best config against the baseline, test, where to look."""
    from search import results as R

    spec = result.spec
    c = result.counts
    total = len(result.records)
    print()
    state = "INTERRUPTED" if result.interrupted else "finished"
    print(f"search {result.name} {state}: {total} trials: {c.get(R.Outcome.COMPLETED, 0)} completed, {c.get(R.Outcome.PRUNED, 0)} pruned by ASHA, "
          f"{c.get(R.Outcome.TIMED_OUT, 0)} timed out, {c.get(R.Outcome.FAILED, 0)} failed, {c.get(R.Outcome.DIVERGED, 0)} diverged")
    if result.best is not None:
        b = result.best
        line = f"best {spec.metric} {b.best_value:.4f} (trial {b.trial_id}, epoch {b.best_epoch:g})"
        if result.baseline is not None and result.baseline.best_value is not None:
            diff = b.best_value - result.baseline.best_value
            line += f"; baseline {result.baseline.best_value:.4f} ({diff:+.4f})"
        print(line)
        print(f"best config (searched values): {_config_line(b.config)}")
    if result.final_error:
        print(f"warning: the final evaluation failed ({result.final_error}); trial results are kept")
    test = result.final.test if result.final is not None else None
    if test is not None:
        print(f"test (best model, evaluated once): acc {test.acc:.4f} loss {test.loss:.4f}" + (f" top5 {test.top5:.4f}" if test.top5 is not None else ""))
    import shlex

    storage = shlex.quote(result.storage or str(result.experiment_dir.parent))  # a URI's ?a=b&c=d needs quotes
    print(f"results: {result.location}   (hpsearch results {result.name} --storage {storage})")
    if result.tracking is not None:
        t = result.tracking
        if t.tracking_uri.startswith("sqlite:"):
            from search.storage import is_uri
            from search.tracking.writer import sqlite_file

            db = sqlite_file(t.tracking_uri)
            ui_storage = storage if not is_uri(storage) or db is None else str(db.parent)
            print(f"MLflow: run `hpsearch ui --storage {ui_storage}` and open {t.ui_url}")
        else:
            print(f"MLflow: {t.ui_url}")
        print(f"        the trials side by side (parallel coordinates): {t.compare_url}")
        print(f"        store {t.tracking_uri}, parent run {t.parent_run_id}")
    if result.final is not None and result.final.model_version:
        print(f"registered model: {spec.name} version {result.final.model_version}")
    if result.interrupted:
        print(f"resume with: hpsearch resume {result.name} --storage {storage}")
    elif result.best is not None:
        print(f"export: hpsearch export {result.name} --storage {storage} --format onnx --out {result.name}-model")


def cmd_run(args: argparse.Namespace) -> int:
    from search.tuner import run_search

    result = run_search(
        args.spec, name=args.name, storage=args.storage, address=args.address, tracking_uri=args.tracking_uri,
        samples=args.samples, max_epochs=args.max_epochs, time_budget=args.time_budget, overrides=args.set or [],
        refit=args.refit, warm_start=args.warm_start,
    )
    print_summary(result)
    return 130 if result.interrupted else 0


def cmd_resume(args: argparse.Namespace) -> int:
    from search.tuner import resume_search

    result = resume_search(args.name, storage=args.storage, address=args.address)
    print_summary(result)
    return 130 if result.interrupted else 0


def _load_records(name: str, storage: str) -> tuple[Any, Any, Path, dict[str, Any]]:
    from search import results as R
    from search.spec import parse_spec

    folder = R.find_search(storage, name)
    state = R.read_state(folder)
    spec = parse_spec(state["spec"], state.get("spec_path", "<spec>"))
    return spec, folder, folder, state


def cmd_results(args: argparse.Namespace) -> int:
    from search import results as R
    from search.rounds import total_rounds
    from search.tuner import find_baseline

    spec, folder, _, state = _load_records(args.name, args.storage)
    rounds = state.get("total_rounds")
    if rounds is None:
        rounds = total_rounds(spec, len(spec.load_data().train))
    records = R.trial_records(folder, metric=spec.metric, mode=spec.mode, total_rounds=rounds, rungs=state.get("rungs", ()))
    baseline = find_baseline(records, spec)
    table = R.results_table(records, metric=spec.metric, mode=spec.mode, baseline_id=baseline.trial_id if baseline else None)
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {len(table)} trials to {args.csv}")
    print(R.format_results(table, metric=spec.metric))
    failed = [(i, e) for i, e in zip(table.get("trial_id", []), table.get("error", []), strict=True) if e]
    for trial_id, error in failed:
        print(f"{trial_id}: {error}"[:120])
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """The models a spec can name: registered ones and torchvision's classification builders."""
    from trainables import zoo
    from trainables.models import list_models, resolve_model

    for name in list_models():
        print(f"{name:28s} registered: {', '.join(sorted(resolve_model(name).hparams))}")
    for builder in zoo.builders():
        side = zoo.min_input_size(builder)
        needs = f"takes {side} px (resized inside)" if side >= zoo.FIXED_SIZE_FROM else f"min {side} px" if side > 1 else "any size"
        print(f"{zoo.PREFIX + builder:28s} {needs}; own options: {', '.join(zoo.plain_options(builder)) or '-'}")
    print("your own: model: path/to/file.py:Class or package.module:factory (README: Your own network and data)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from search import results as R
    from search import storage as S

    names = R.list_searches(args.storage)
    if not names:
        print(f"no searches in {S.display(args.storage) if S.is_uri(args.storage) else Path(args.storage).resolve()}")
        return 0
    for name in names:
        state = R.read_state(R.search_location(args.storage, name))
        status = "finished" if state.get("finished") else "unfinished (hpsearch resume " + name + ")"
        best = (state.get("final") or {}).get("test", {}).get("acc")
        extra = f", test acc {best:.4f}" if isinstance(best, float) else ""
        print(f"{name}  spec={state['spec']['name']}  created {state.get('created', '?')}  {status}{extra}")
    return 0


# ----------------------------------------------------------------------------------------------
# export / predict / ui


def cmd_export(args: argparse.Namespace) -> int:
    from search import layout as L
    from search import results as R
    from search.deploy.export import export_model

    spec, folder, _, state = _load_records(args.name, args.storage)
    checkpoint = R.fetch_file(folder, f"{L.BEST}/{L.BEST_CHECKPOINT}")  # the model handed over (downloaded from a URI)
    if checkpoint is None:  # an interrupted search has none yet: its best trial so far
        from search.rounds import total_rounds

        rounds = total_rounds(spec, len(spec.load_data().train))
        best = R.best_record(R.trial_records(folder, metric=spec.metric, mode=spec.mode, total_rounds=rounds), spec.mode)
        if best is None:
            raise UserError(f"search {args.name!r} has no trial with a result yet; nothing to export")
        checkpoint = R.best_checkpoint_dir(best) / L.BEST_CHECKPOINT
    final = state.get("final") or {}
    from trainables.checkpoint import load_checkpoint

    val = load_checkpoint(checkpoint).get("metrics", {})
    metrics = {"val": {k: v for k, v in val.items() if k.startswith("val_")}, "test": final.get("test")}
    out = export_model(checkpoint, fmt=args.format, out_dir=args.out, metrics=metrics, extra={"search": args.name, "spec": spec.name})
    print(f"exported {args.format} model of search {args.name} to {out}")
    check = json.loads((Path(out) / "model.json").read_text()).get("verification") or {}
    if "max_abs_diff" in check:
        runtime = check.get("runtime", "torch")
        print(f"checked with {runtime} against the torch model on batches {check.get('batch_sizes')}: max abs diff {check['max_abs_diff']:.2e} (limit 1e-4)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from search.deploy.predict import predict

    table = predict(args.model_dir, args.inputs, out_csv=args.out, top_k=args.top_k)
    import pandas as pd

    with pd.option_context("display.max_rows", 50, "display.width", 200, "display.max_colwidth", 60):
        print(table)
    errors = int((table["error"].astype(str) != "").sum()) if "error" in table else 0
    if args.out:
        print(f"wrote {len(table)} predictions to {args.out}" + (f" ({errors} unreadable)" if errors else ""))
    return 0


def _compare_link(name: str, storage: str, tracking_uri: str, host: str, port: int) -> str:
    """The MLflow compare-runs link of search `name`'s trials, from its run map."""
    import json

    from search import layout as L
    from search import results as R
    from search.tracking.callback import compare_url

    runs_file = R.fetch_file(R.find_search(storage, name), L.RUNS)
    if runs_file is None:
        raise UserError(f"search {name!r} has no MLflow runs (it ran with tracking off, or before its first trial)")
    runs = json.loads(runs_file.read_text())
    return compare_url(tracking_uri, runs["experiment_id"], list(runs["trials"].values()), host, port)


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from search.storage import is_uri, local_tracking_root
    from search.tracking.callback import artifact_root, resolve_tracking_uri

    if is_uri(args.storage):  # a bucket holds no SQLite store: the searches' embedded store is local (see `run`)
        args.storage = str(local_tracking_root(args.storage))
    uri = resolve_tracking_uri(args.tracking_uri, args.storage)
    if uri.startswith(("http://", "https://")):
        print(f"the tracking server at {uri} already serves the UI: open {uri}")
        return 0
    if args.name:  # the page that compares the search's trials (parallel coordinates of params and metrics)
        print(f"search {args.name}: open {_compare_link(args.name, args.storage, uri, args.host, args.port)}")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    if uri.startswith("sqlite:"):
        cmd += ["--default-artifact-root", artifact_root(args.storage)]
    print(f"MLflow UI on http://{args.host}:{args.port}  (store {uri}); Ctrl-C to stop", flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpsearch", description="Distributed hyperparameter search for PyTorch CNN image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    storage_help = (f"folder or URI (s3://bucket/prefix, gs://..., any pyarrow filesystem) holding searches "
                    f"(default: ./{DEFAULT_STORAGE}; with a URI the embedded MLflow store stays in ./{DEFAULT_STORAGE})")
    with_storage = argparse.ArgumentParser(add_help=False)  # the --storage option every search command shares
    with_storage.add_argument("--storage", default=os.environ.get("HPSEARCH_STORAGE", DEFAULT_STORAGE), help=storage_help)

    p = sub.add_parser("train", help="train a spec's baseline once (no search)")
    p.add_argument("spec")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec value, e.g. baseline.lr=0.01")
    p.add_argument("--epochs", type=int, help="epochs (default: the spec's budget.max_epochs)")
    p.add_argument("--out", help="checkpoint file to write")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", parents=[with_storage], help="run a search over a spec")
    p.add_argument("spec")
    p.add_argument("--samples", type=int, help="number of trials")
    p.add_argument("--max-epochs", type=int, help="epochs per trial at most")
    p.add_argument("--time-budget", help="stop starting trials after this long: 600, 90s, 10m, 2h")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec value, e.g. budget.max_concurrent=4")
    p.add_argument("--name", help="search name (default: SPECNAME-DATE-TIME)")
    p.add_argument("--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or an SQLite file in the storage, "
                                          f"./{DEFAULT_STORAGE}/mlflow.db when the storage is a URI)")
    p.add_argument("--refit", action="store_true", help="retrain the best config on train+val before the test evaluation")
    p.add_argument("--warm-start", nargs="+", metavar="NAME", default=[],
                   help="earlier searches (same storage) whose trials start this one's sampler and rungs")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", parents=[with_storage], help="continue an interrupted search")
    p.add_argument("name")
    p.add_argument("--address", help="Ray cluster address (default: local)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("results", parents=[with_storage], help="table of a search's trials, best first")
    p.add_argument("name")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("list", parents=[with_storage], help="searches in the storage")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("export", parents=[with_storage], help="export a search's best model")
    p.add_argument("name")
    p.add_argument("--format", choices=["torchscript", "onnx", "state_dict"], default="torchscript")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="the models a spec can name (registered, torchvision.<builder>)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("predict", help="classify images with an exported model")
    p.add_argument("model_dir")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", help="CSV file for the predictions")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("ui", parents=[with_storage], help="start the MLflow UI on the search store (127.0.0.1)")
    p.add_argument("name", nargs="?", help="a search: also print the link that compares its trials")
    p.add_argument("--tracking-uri")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
    return parser


def one_line_warnings() -> None:
    """Warnings about the user's data print as one `hpsearch: warning:` line (no Python source line)."""
    import warnings

    from trainables.errors import DataWarning

    python_format = warnings.formatwarning

    def formatted(message: Any, category: type, filename: str, lineno: int, line: str | None = None) -> str:
        if issubclass(category, DataWarning):
            return f"hpsearch: warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = formatted


def _quiet_libraries() -> None:
    """The console shows hpsearch's lines: Optuna's per-study INFO lines off (a process-wide setting, so it is made
    here, by the command, and never by the library)."""
    import logging

    logging.getLogger("optuna").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hpsearch` console script."""
    one_line_warnings()
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"hpsearch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hpsearch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hpsearch models | head`: the reader left
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
