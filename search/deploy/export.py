"""Export a trained checkpoint to a self-describing model folder.

`export_model(checkpoint, fmt=..., out_dir=...)` writes one weights file plus
`model.json` into `out_dir`:

    torchscript  model.pt     `torch.jit.load` runs it with torch alone (no hpsearch code)
    onnx         model.onnx   any ONNX runtime; dynamic batch axis; checked against torch
    state_dict   weights.pt   plain tensors (`torch.load(..., weights_only=True)`); rebuilt with
                              `trainables.models.create_model` from model.json's architecture

Every exported graph takes the input the network was trained on: float32
(N, C, H, W) that is already normalised, i.e. pixels/255 then (x - mean) / std
with model.json's `mean` and `std`. model.json also says how to get there from
a file (`preprocessing`): convert to `color_mode` ("L" or "RGB") and resize to
`image_size` (bilinear), exactly what training did. `search.deploy.predict` does all of it.

ONNX: the TorchScript-based exporter (`dynamo=False`) is used. It needs only
`onnx`; torch's default dynamo exporter would also need `onnxscript`. It is
deprecated in torch >= 2.9 but present up to the project's torch cap; when
it is gone and `onnxscript` is installed, the dynamo exporter is used instead.
Either way the graph is checked with onnxruntime against the torch model.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.checkpoint import load_checkpoint
from trainables.errors import UserError
from trainables.files import write_atomic
from trainables.models import create_model, resolve_model
from trainables.references import PYTHON_PREFIX, file_digest, is_reference, parse_reference
from trainables.train import TRAIN_HPARAMS

log = logging.getLogger(__name__)

MODEL_FORMAT = "hpsearch-model/1"
METADATA_FILE = "model.json"
FORMATS = {"torchscript": "model.pt", "onnx": "model.onnx", "state_dict": "weights.pt"}
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4  # max abs logit difference onnxruntime vs torch that an export may have
VERIFY_BATCHES = (1, 8)  # batch sizes the exported graph is checked on (dynamic axis included)
REQUIRED_STATE = ("model", "model_name", "model_kwargs", "hparams", "class_names", "mean", "std")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:limit]}" if first else type(exc).__name__


def _image_size(model_kwargs: dict[str, Any]) -> list[int]:
    size = model_kwargs["image_size"]
    return [int(size), int(size)] if isinstance(size, (int, float)) else [int(s) for s in size]


def architecture(state: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments that rebuild the checkpoint's network (data shape args + model hparams)."""
    name = state["model_name"]
    source = resolve_model(name)
    model_hp = {k: v for k, v in dict(state["hparams"]).items()
                if k in source.hparams or (source.open_kwargs and k not in TRAIN_HPARAMS)}
    # the checkpoint holds every weight: a rebuild never looks for ImageNet files
    return {**dict(state["model_kwargs"]), **model_hp, **source.rebuild_options()}


def rebuild_recipe(name: str) -> dict[str, Any]:
    """How model.json's `architecture` becomes the network again, for each kind of model."""
    source = resolve_model(name)
    recipe: dict[str, Any] = {"kind": source.kind, "call": f"trainables.models.create_model({name!r}, **architecture)"}
    if source.kind == "user" and is_reference(name) and not name.startswith(PYTHON_PREFIX):
        file = parse_reference(name).file
        recipe["call"] = f"{name.rsplit(':', 1)[1]}(**architecture) from {file or name.rsplit(':', 1)[0]}"
        if file is not None:
            recipe.update(file=str(file), sha256=file_digest(file))
    elif source.kind == "user":
        recipe["call"] = f"the Python object {name.removeprefix(PYTHON_PREFIX)}(**architecture) (handed to run_search)"
    recipe["shape_args"] = list(source.shape_args)
    return recipe


def build_model(name: str, arch: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """`create_model(name, **arch)` with `weights` loaded, on the CPU, in eval mode."""
    model = create_model(name, **arch)
    weights = {k.removeprefix("_orig_mod."): v for k, v in weights.items()}  # torch.compile'd models
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"the weights do not fit model {name!r} with {arch} ({_one_line(exc, 160)})") from None
    return model.cpu().eval()


def load_model_from_checkpoint(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(network in eval mode on the CPU, checkpoint state) from a checkpoint file or folder."""
    state = load_checkpoint(path)
    missing = [k for k in REQUIRED_STATE if k not in state]
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(missing)}; it was not written by hpsearch's trainer")
    model = build_model(state["model_name"], architecture(state), state["model"])
    return model, state


# ----------------------------------------------------------------------------------------------


def _versions(fmt: str) -> dict[str, str]:
    def version(dist: str, module: Any = None) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return str(getattr(module, "__version__", "unknown"))

    import torchvision

    out = {"torch": torch.__version__, "torchvision": torchvision.__version__, "hpsearch": version("hpsearch")}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        out["onnx"] = onnx.__version__
        out["onnxruntime"] = onnxruntime.__version__
    return out


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy/torch scalars to numbers, non-finite floats to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _verification_inputs(channels: int, size: list[int], mean: list[float], std: list[float]) -> torch.Tensor:
    """Eight seeded random uint8 images, normalised as in training: real-looking inputs."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (max(VERIFY_BATCHES), channels, *size), generator=g, dtype=torch.uint8)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (pixels.float() / 255.0 - m) / s


def _max_diff(run: Any, model: torch.nn.Module, x: torch.Tensor) -> float:
    """Largest |run(batch) - model(batch)| over the verification batch sizes."""
    worst = 0.0
    with torch.no_grad():
        for n in VERIFY_BATCHES:
            batch = x[:n]
            ref = model(batch).numpy()
            got = np.asarray(run(batch))
            if got.shape != ref.shape:
                raise UserError(f"exported model gives shape {list(got.shape)} for batch {n}, torch gives {list(ref.shape)}")
            worst = max(worst, float(np.abs(got.astype(np.float64) - ref).max()))
    return worst


def _export_torchscript(model: torch.nn.Module, x: torch.Tensor, path: Path, metadata: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit is deprecated (FutureWarning) and tracer warnings
        try:
            compiled = torch.jit.script(model)
        except Exception:  # noqa: BLE001 - some modules do not script; tracing works for plain CNNs
            compiled = torch.jit.trace(model, x[:2], check_trace=False)
        compiled = compiled.eval()
        torch.jit.save(compiled, str(path), _extra_files={METADATA_FILE: metadata})
        loaded = torch.jit.load(str(path), map_location="cpu")
    return _max_diff(lambda b: loaded(b).numpy(), model, x)


def _onnx_export_call(model: torch.nn.Module, x: torch.Tensor, path: Path) -> str:
    """Write the ONNX file; returns which exporter did ("torchscript" or "dynamo")."""
    common = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": ONNX_OPSET}
    legacy = {**common, "dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, "do_constant_folding": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=False, **legacy)
            return "torchscript"
        except TypeError as exc:
            if "dynamo" not in str(exc):
                raise
            torch.onnx.export(model, (x,), str(path), **legacy)  # torch < 2.5: legacy is the only exporter
            return "torchscript"
        except Exception as exc:  # noqa: BLE001 - legacy exporter removed or failing: try dynamo
            try:
                import onnxscript  # noqa: F401
            except ImportError:
                raise RuntimeError(f"{_one_line(exc, 160)}; installing onnxscript enables torch's dynamo exporter") from None
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, dynamic_shapes=({0: batch},),
                              **{**common, "opset_version": max(ONNX_OPSET, 18)})  # dynamo's lowest opset
            return "dynamo"


def _export_onnx(model: torch.nn.Module, x: torch.Tensor, path: Path) -> tuple[float, str, int]:
    """Export, check and verify; returns (max abs diff vs torch, exporter, opset)."""
    import onnx
    import onnxruntime as ort

    exporter = _onnx_export_call(model, x[:2], path)
    onnx.checker.check_model(str(path))
    opset = next((int(o.version) for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")), ONNX_OPSET)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    diff = _max_diff(lambda b: session.run(None, {INPUT_NAME: b.numpy()})[0], model, x)
    return diff, exporter, opset


def export_model(
    checkpoint_path: str | os.PathLike, *, fmt: str, out_dir: str | os.PathLike,
    metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
) -> Path:
    """Export the checkpoint's network as `fmt` into `out_dir` (+ model.json); returns `out_dir`.

    metrics: recorded as given (e.g. {"val": {...}, "test": {...}}); default: the checkpoint's
    own round metrics under "val". extra: recorded under the "extra" key (trial id, run id...).
    For onnx the max abs logit difference onnxruntime vs torch is checked (<= 1e-4) and
    recorded as `onnx_max_abs_diff`; model.json is written last, so a failed export
    never leaves a model.json pointing at a missing or wrong file.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    model, state = load_model_from_checkpoint(checkpoint_path)
    name, arch = state["model_name"], architecture(state)
    channels = int(state["model_kwargs"]["in_channels"])
    size = _image_size(state["model_kwargs"])
    mean, std = [float(v) for v in state["mean"]], [float(v) for v in state["std"]]
    class_names = [str(c) for c in state["class_names"]]
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create export folder {out} ({_one_line(exc)})") from None

    x = _verification_inputs(channels, size, mean, std)
    with torch.no_grad():
        logits = model(x)
    if not torch.isfinite(logits).all():
        raise UserError(f"checkpoint {checkpoint_path} gives non-finite outputs (a diverged run?); export another trial")
    if logits.shape[-1] != len(class_names):
        raise UserError(f"checkpoint {checkpoint_path} has {len(class_names)} class names but the model gives {logits.shape[-1]} outputs")

    info: dict[str, Any] = {
        "format_version": MODEL_FORMAT,
        "format": fmt,
        "weights_file": FORMATS[fmt],
        "model_name": name,
        "architecture": arch,
        "rebuild": rebuild_recipe(name),
        "class_names": class_names,
        "num_classes": len(class_names),
        "input_shape": [channels, *size],
        "channels": channels,
        "color_mode": "L" if channels == 1 else "RGB",
        "image_size": size,
        "mean": mean,
        "std": std,
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW", "normalized": True},
        "output": {"name": OUTPUT_NAME, "kind": "logits (apply softmax for probabilities)"},
        "preprocessing": (
            f"convert to {'L' if channels == 1 else 'RGB'}, resize to {size[1]}x{size[0]} (W x H, bilinear), "
            "scale to [0, 1] (/255), subtract mean and divide by std per channel, layout (N, C, H, W) float32"
        ),
        "hparams": dict(state["hparams"]),
        "metrics": dict(metrics) if metrics is not None else {"val": dict(state.get("metrics") or {})},
        "checkpoint": {"path": str(Path(checkpoint_path).expanduser().resolve()), "round": state.get("round")},
        "versions": _versions(fmt),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        info["extra"] = dict(extra)

    target = out / FORMATS[fmt]
    tmp = out / f".{target.name}.{os.getpid()}.tmp"
    try:
        if fmt == "torchscript":
            diff = _export_torchscript(model, x, tmp, json.dumps(_jsonable(info)))
            info["verification"] = {"max_abs_diff": diff, "batch_sizes": list(VERIFY_BATCHES)}
        elif fmt == "onnx":
            diff, exporter, opset = _export_onnx(model, x, tmp)
            info.update(onnx_max_abs_diff=diff, onnx_exporter=exporter, onnx_opset=opset)
            info["verification"] = {"max_abs_diff": diff, "batch_sizes": list(VERIFY_BATCHES), "runtime": "onnxruntime"}
            if not diff <= ONNX_TOLERANCE:
                raise UserError(
                    f"ONNX export of {name} differs from torch by {diff:.3g} (> {ONNX_TOLERANCE:g}) on the same "
                    "inputs; use --format torchscript or state_dict"
                )
        else:
            torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, target)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporter failures become one actionable line
        others = ", ".join(f for f in FORMATS if f != fmt)
        raise UserError(f"could not export {name} as {fmt} to {target} ({_one_line(exc)}); try --format {others.replace(', ', ' or ')}") from None
    finally:
        tmp.unlink(missing_ok=True)

    write_atomic(out / METADATA_FILE, json.dumps(_jsonable(info), indent=2) + "\n")
    if fmt == "onnx":
        log.info("exported %s to %s (onnxruntime vs torch max abs diff %.3g)", name, target, info["onnx_max_abs_diff"])
    else:
        log.info("exported %s to %s", name, target)
    return out


def read_model_info(model_dir: str | os.PathLike) -> dict[str, Any]:
    """model.json of an export folder; a missing folder or file is a `UserError` naming the path."""
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise UserError(f"model folder {folder} does not exist; export one with `hpsearch export`")
    path = folder / METADATA_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist; {folder} is not an exported model folder")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not readable JSON ({_one_line(exc)})") from None
    if not isinstance(info, dict) or info.get("format_version") != MODEL_FORMAT:
        raise UserError(f"{path} is not an hpsearch model description (format_version is not {MODEL_FORMAT!r})")
    if info.get("format") not in FORMATS:
        raise UserError(f"{path} names format {info.get('format')!r}; expected one of {', '.join(FORMATS)}")
    return info
