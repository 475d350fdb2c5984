"""Predict image files with an exported model folder (see `search.deploy.export`).

The model is loaded from the export alone: torchscript with `torch.jit.load`,
onnx with onnxruntime, state_dict by rebuilding the network with
`trainables.models` from model.json's architecture. Images are preprocessed
exactly like training: `trainables.data.decode_image` (PIL, convert to L/RGB,
bilinear resize), then /255 and (x - mean) / std with model.json's statistics.

One row per file: file, predicted (class name), probability (softmax of the
top class), top<k> ("cat:0.9100;dog:0.0500;...") and error (empty when fine).
A file that is not a readable image gets its error and no prediction; the
other files are still predicted.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from search.deploy.export import FORMATS, INPUT_NAME, read_model_info
from trainables.data import decode_image
from trainables.errors import UserError

Runner = Callable[[np.ndarray], np.ndarray]  # normalised float32 (N, C, H, W) -> logits (N, classes)


def load_runner(model_dir: str | os.PathLike, info: dict[str, Any] | None = None) -> Runner:
    """A function normalised batch → logits for the exported model in `model_dir`."""
    folder = Path(model_dir).expanduser()
    info = info if info is not None else read_model_info(folder)
    fmt = info["format"]
    weights = folder / str(info.get("weights_file") or FORMATS[fmt])
    if not weights.is_file():
        raise UserError(f"{weights} does not exist; model.json of {folder} names it as the {fmt} weights")
    try:
        if fmt == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(str(weights), options, providers=["CPUExecutionProvider"])
            input_name = session.get_inputs()[0].name if session.get_inputs() else INPUT_NAME
            return lambda x: np.asarray(session.run(None, {input_name: x})[0])

        import torch

        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = torch.jit.load(str(weights), map_location="cpu").eval()
        else:
            from search.deploy.export import build_model

            state = torch.load(weights, map_location="cpu", weights_only=True)
            module = build_model(info["model_name"], dict(info["architecture"]), state)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign weights file
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UserError(f"cannot load {fmt} model {weights} ({type(exc).__name__}: {first})") from None

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).float().numpy()

    return run


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def collect_files(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Files in the given order; a folder expands to its files (recursive, sorted, hidden skipped)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
            if not found:
                raise UserError(f"folder {path} holds no files to predict")
            files += [str(p) for p in found]
        elif path.is_file():
            files.append(str(path))
        else:
            raise UserError(f"input {path} does not exist; give image files or folders of images")
    return list(dict.fromkeys(files))  # a file given twice (or via its folder) is predicted once


def _why_unreadable(path: str) -> str:
    """The reason `decode_image` returned None, as one line."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        return f"not a readable image ({type(exc).__name__}: {first})" if first else f"not a readable image ({type(exc).__name__})"
    return "not a readable image"


def _decode(path: str, size: tuple[int, int], channels: int) -> tuple[np.ndarray | None, str]:
    try:
        image = decode_image(path, size, channels)
    except Exception as exc:  # noqa: BLE001 - e.g. PIL's DecompressionBombError
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        return None, f"not a readable image ({type(exc).__name__}: {first})"
    if image is None:
        return None, _why_unreadable(path)
    return image, ""


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(
    model_dir: str | os.PathLike, inputs: list[str], *, out_csv: str | None = None, top_k: int = 5, batch_size: int = 64,
) -> pd.DataFrame:
    """Predict every image of `inputs` (files or folders) with the export in `model_dir`.

    Columns: file, predicted, probability, top{top_k}, error. Writes `out_csv` when given.
    """
    if int(top_k) < 1:
        raise UserError(f"top_k must be >= 1, but got top_k={top_k}")
    if int(batch_size) < 1:
        raise UserError(f"batch_size must be >= 1, but got batch_size={batch_size}")
    info = read_model_info(model_dir)
    files = collect_files(inputs)
    run = load_runner(model_dir, info)

    class_names = [str(c) for c in info["class_names"]]
    channels = int(info["channels"])
    size = (int(info["image_size"][0]), int(info["image_size"][1]))
    mean = np.asarray(info["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(info["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    k = min(int(top_k), len(class_names))
    top_col = f"top{int(top_k)}"

    rows: list[dict[str, Any]] = []
    for start in range(0, len(files), int(batch_size)):
        chunk = files[start : start + int(batch_size)]
        decoded = [_decode(f, size, channels) for f in chunk]
        good = [i for i, (image, _) in enumerate(decoded) if image is not None]
        probs: dict[int, np.ndarray] = {}
        if good:
            x = np.stack([decoded[i][0] for i in good]).astype(np.float32) / 255.0
            x = np.ascontiguousarray((x - mean) / std, dtype=np.float32)
            p = _softmax(run(x))
            probs = {i: p[j] for j, i in enumerate(good)}
        for i, path in enumerate(chunk):
            if i not in probs:
                rows.append({"file": path, "predicted": "", "probability": np.nan, top_col: "", "error": decoded[i][1]})
                continue
            order = np.argsort(-probs[i], kind="stable")[:k]
            rows.append({
                "file": path,
                "predicted": class_names[int(order[0])],
                "probability": float(probs[i][order[0]]),
                top_col: ";".join(f"{class_names[int(c)]}:{probs[i][c]:.4f}" for c in order),
                "error": "",
            })
    frame = pd.DataFrame(rows, columns=["file", "predicted", "probability", top_col, "error"])
    if out_csv:
        target = Path(out_csv).expanduser()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(target, index=False)
        except OSError as exc:
            raise UserError(f"cannot write predictions to {target} ({type(exc).__name__}: {exc})") from None
    return frame
