"""Export (torchscript / onnx / state_dict) and predict, on a real checkpoint.

A cnn is trained for 2 epochs on scikit-learn's digits (offline, ~1 s); its
test images are written as PNG files whose labels the tests know. Every
export must predict those files exactly like the checkpoint's torch model
does on the same normalised tensors.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from search.deploy.export import FORMATS, ONNX_TOLERANCE, export_model, load_model_from_checkpoint
from search.deploy.predict import collect_files, predict
from search.spec import load_spec
from trainables.checkpoint import save_checkpoint
from trainables.data import create_dataset
from trainables.errors import UserError
from trainables.models import create_model
from trainables.pipeline import Normalizer
from trainables.train import RunSettings, fit

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRED_KEYS = {
    "format_version", "format", "weights_file", "class_names", "input_shape", "channels", "image_size",
    "mean", "std", "model_name", "architecture", "hparams", "metrics", "versions", "created",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-epoch digits checkpoint, its test images as PNG files, and the torch model's answers."""
    tmp = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPSEARCH_CACHE", str(tmp / "cache"))
        data = create_dataset("digits")
        # the quickstart baseline, lr 0.005 instead of 0.001: 2 epochs then reach ~0.9 test accuracy (0.70 at 0.001)
        hparams = {**load_spec(REPO_ROOT / "spaces" / "quickstart.yaml").baseline, "lr": 0.005}
        threads = torch.get_num_threads()
        try:  # one thread: on a busy 2-core machine two spinning OpenMP threads make this 20x slower
            result = fit(hparams, data, RunSettings(model="cnn", max_epochs=2, seed=0, threads=1))
        finally:
            torch.set_num_threads(threads)  # the Trainer sets the process-wide count and leaves it
    ckpt = save_checkpoint(result.best_state, tmp / "ckpt")

    images_dir = tmp / "images"
    images_dir.mkdir()
    assert data.test is not None and data.test.images is not None
    for i, image in enumerate(data.test.images):
        Image.fromarray(image[0], mode="L").save(images_dir / f"{i:04d}.png")

    model, state = load_model_from_checkpoint(ckpt)
    with torch.no_grad():
        x = Normalizer(data.mean, data.std, torch.device("cpu"))(torch.from_numpy(data.test.images))
        probs = torch.softmax(model(x), dim=1).numpy()
    return {
        "tmp": tmp, "ckpt": ckpt, "data": data, "result": result, "state": state, "model": model,
        "images_dir": images_dir, "labels": data.test.labels, "torch_pred": probs.argmax(1), "torch_probs": probs,
    }


@pytest.fixture(scope="module")
def exports(trained: dict) -> dict[str, Path]:
    metrics = {"val": trained["result"].best_metrics, "test": {"acc": trained["result"].test["acc"]}}
    return {
        fmt: export_model(trained["ckpt"], fmt=fmt, out_dir=trained["tmp"] / f"out-{fmt}", metrics=metrics, extra={"trial": "t0"})
        for fmt in FORMATS
    }


def test_loaded_checkpoint_matches_the_trainer(trained: dict) -> None:
    model, state = trained["model"], trained["state"]
    assert not model.training
    assert state["model_name"] == "cnn" and state["class_names"] == [str(d) for d in range(10)]
    accuracy = float((trained["torch_pred"] == trained["labels"]).mean())
    assert accuracy == pytest.approx(trained["result"].test["acc"], abs=1e-9)  # the Trainer-free model is the trained one
    assert accuracy >= 0.8


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_predicts_like_the_torch_model(trained: dict, exports: dict[str, Path], fmt: str) -> None:
    out = exports[fmt]
    info = json.loads((out / "model.json").read_text())
    assert REQUIRED_KEYS <= set(info)
    assert info["format"] == fmt and (out / info["weights_file"]).is_file() and info["weights_file"] == FORMATS[fmt]
    assert info["input_shape"] == [1, 8, 8] and info["channels"] == 1 and info["image_size"] == [8, 8]
    assert info["mean"] == pytest.approx(list(trained["data"].mean)) and info["std"] == pytest.approx(list(trained["data"].std))
    assert info["architecture"]["channels"] == "16-32" and info["architecture"]["num_classes"] == 10
    assert info["hparams"] == trained["state"]["hparams"]
    assert info["metrics"]["test"]["acc"] == trained["result"].test["acc"]
    assert info["extra"] == {"trial": "t0"}
    assert {"torch", "torchvision", "hpsearch"} <= set(info["versions"])

    csv = trained["tmp"] / f"pred-{fmt}.csv"
    frame = predict(out, [str(trained["images_dir"])], out_csv=str(csv))
    assert list(frame.columns) == ["file", "predicted", "probability", "top5", "error"]
    assert len(frame) == len(trained["labels"]) and (frame["error"] == "").all()
    indices = [int(Path(f).stem) for f in frame["file"]]
    assert indices == sorted(indices) == list(range(len(trained["labels"])))
    predicted = frame["predicted"].astype(int).to_numpy()
    np.testing.assert_array_equal(predicted, trained["torch_pred"])
    np.testing.assert_allclose(frame["probability"].to_numpy(), trained["torch_probs"].max(1), atol=1e-5)
    accuracy = float((predicted == trained["labels"]).mean())
    assert accuracy == pytest.approx(trained["result"].test["acc"], abs=1e-9) and accuracy >= 0.8
    first = frame["top5"].iloc[0].split(";")
    assert len(first) == 5 and first[0].split(":")[0] == frame["predicted"].iloc[0]
    assert pd.read_csv(csv, dtype={"predicted": str}, keep_default_na=False)["predicted"].tolist() == frame["predicted"].tolist()


def test_onnx_matches_torch_with_a_dynamic_batch(trained: dict, exports: dict[str, Path]) -> None:
    import onnxruntime as ort

    info = json.loads((exports["onnx"] / "model.json").read_text())
    assert 0 <= info["onnx_max_abs_diff"] <= ONNX_TOLERANCE
    assert {"onnx", "onnxruntime"} <= set(info["versions"])
    session = ort.InferenceSession(str(exports["onnx"] / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "images"
    normalise = Normalizer(trained["data"].mean, trained["data"].std, torch.device("cpu"))
    for n in (1, 7):
        x = normalise(torch.from_numpy(trained["data"].test.images[:n]))
        got = session.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            want = trained["model"](x).numpy()
        assert got.shape == (n, 10)
        assert np.abs(got - want).max() <= ONNX_TOLERANCE


def test_state_dict_export_is_plain_tensors(exports: dict[str, Path], trained: dict) -> None:
    weights = torch.load(exports["state_dict"] / "weights.pt", map_location="cpu", weights_only=True)
    assert set(weights) == set(trained["state"]["model"])
    assert all(torch.equal(weights[k], trained["state"]["model"][k]) for k in weights)


def test_torchscript_runs_without_hpsearch_code(trained: dict, exports: dict[str, Path]) -> None:
    script = trained["tmp"] / "standalone.py"
    script.write_text(textwrap.dedent("""
        import importlib.abc, json, sys
        from pathlib import Path

        class Block(importlib.abc.MetaPathFinder):  # hpsearch's code must not be needed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("trainables", "search"):
                    raise ImportError(f"{name} must not be imported")
                return None

        sys.meta_path.insert(0, Block())
        import numpy as np
        import torch
        from PIL import Image

        folder, image = Path(sys.argv[1]), sys.argv[2]
        info = json.loads((folder / "model.json").read_text())
        model = torch.jit.load(str(folder / info["weights_file"]), map_location="cpu")
        pixels = np.asarray(Image.open(image).convert(info["color_mode"]), dtype=np.float32)[None, None] / 255.0
        x = (pixels - np.array(info["mean"], np.float32).reshape(1, -1, 1, 1)) / np.array(info["std"], np.float32).reshape(1, -1, 1, 1)
        logits = model(torch.from_numpy(x.astype(np.float32)))
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("trainables", "search"))
        print(json.dumps({"pred": info["class_names"][int(logits.argmax(1))], "leaked": leaked}))
    """))
    done = subprocess.run(
        [sys.executable, "-I", str(script), str(exports["torchscript"]), str(trained["images_dir"] / "0003.png")],
        cwd=trained["tmp"], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["leaked"] == []
    assert answer["pred"] == str(trained["torch_pred"][3])


def test_a_corrupt_image_gets_an_error_row(trained: dict, exports: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    for i, name in [(0, "a.png"), (1, "sub/c.png")]:
        Image.open(trained["images_dir"] / f"{i:04d}.png").save(folder / name)
    (folder / "b.png").write_bytes(b"this is not a png")
    Image.open(trained["images_dir"] / "0002.png").save(folder / ".hidden.png")
    (folder / ".git").mkdir()
    (folder / ".git" / "x.png").write_bytes(b"hidden folder")
    extra = tmp_path / "single.png"
    Image.open(trained["images_dir"] / "0002.png").convert("RGB").resize((16, 16)).save(extra)  # converted + resized

    frame = predict(exports["onnx"], [str(folder), str(extra)], top_k=3, batch_size=2, out_csv=str(tmp_path / "p.csv"))
    assert [Path(f).relative_to(tmp_path).as_posix() for f in frame["file"]] == ["mixed/a.png", "mixed/b.png", "mixed/sub/c.png", "single.png"]
    assert list(frame.columns) == ["file", "predicted", "probability", "top3", "error"]
    bad = frame.iloc[1]
    assert bad["error"].startswith("not a readable image") and bad["predicted"] == "" and np.isnan(bad["probability"])
    good = frame.drop(index=1)
    assert (good["error"] == "").all() and good["probability"].between(0, 1).all()
    assert good["predicted"].iloc[0] == str(trained["torch_pred"][0]) and good["predicted"].iloc[1] == str(trained["torch_pred"][1])
    assert all(len(t.split(";")) == 3 for t in good["top3"])
    on_disk = pd.read_csv(tmp_path / "p.csv", keep_default_na=False, dtype=str)
    assert on_disk["error"].iloc[1] == bad["error"] and len(on_disk) == 4


def test_user_errors(trained: dict, exports: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="torchscript, onnx, state_dict"):
        export_model(trained["ckpt"], fmt="tflite", out_dir=tmp_path / "x")
    with pytest.raises(UserError, match="does not exist"):
        export_model(tmp_path / "nope.pt", fmt="onnx", out_dir=tmp_path / "x")
    missing = tmp_path / "no-model"
    with pytest.raises(UserError, match=str(missing)):
        predict(missing, [str(trained["images_dir"])])
    missing.mkdir()
    with pytest.raises(UserError, match="model.json"):
        predict(missing, [str(trained["images_dir"])])
    with pytest.raises(UserError, match="nothing-here"):
        predict(exports["onnx"], [str(tmp_path / "nothing-here.png")])
    with pytest.raises(UserError, match="top_k"):
        predict(exports["onnx"], [str(trained["images_dir"])], top_k=0)
    assert collect_files([str(trained["images_dir"] / "0001.png")] * 2) == [str(trained["images_dir"] / "0001.png")]

    state = {k: v for k, v in trained["state"].items() if k != "format"}
    broken = {**state, "model": {k: v for k, v in state["model"].items() if not k.startswith("0.")}}
    with pytest.raises(UserError, match="do not fit model 'cnn'"):
        export_model(save_checkpoint(broken, tmp_path / "broken.pt"), fmt="state_dict", out_dir=tmp_path / "x")
    diverged = {**state, "model": {k: torch.full_like(v, float("nan")) for k, v in state["model"].items()}}
    with pytest.raises(UserError, match="non-finite"):
        export_model(save_checkpoint(diverged, tmp_path / "diverged.pt"), fmt="onnx", out_dir=tmp_path / "x")
    assert not (tmp_path / "x" / "model.json").exists()


def test_resnet18_exports_without_imagenet_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "in_channels": 3, "image_size": [32, 32]}
    model_hp = {"pretrained": False, "weights_path": "", "freeze": "none", "hidden": 16, "dropout": 0.5}
    model = create_model("resnet18", **kwargs, **model_hp)
    state = {
        "model": {k: v.detach() for k, v in model.state_dict().items()},
        "hparams": {**model_hp, "pretrained": True, "weights_path": "/nowhere/resnet18.pth", "lr": 0.01, "optimizer": "sgd"},
        "model_name": "resnet18", "model_kwargs": kwargs, "class_names": ["a", "b", "c"],
        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "metrics": {"val_acc": 0.4},
    }
    ckpt = save_checkpoint(state, tmp_path / "ckpt")
    loaded, _ = load_model_from_checkpoint(ckpt)  # pretrained forced off: no ImageNet file is looked for
    assert not loaded.training
    out = export_model(ckpt, fmt="onnx", out_dir=tmp_path / "onnx")
    info = json.loads((out / "model.json").read_text())
    assert info["architecture"]["pretrained"] is False and info["hparams"]["pretrained"] is True
    assert info["input_shape"] == [3, 32, 32] and info["color_mode"] == "RGB"
    assert info["metrics"] == {"val": {"val_acc": 0.4}}
    assert info["onnx_max_abs_diff"] <= ONNX_TOLERANCE

    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = loaded(x).numpy()
    assert got.shape == (5, 3) and np.abs(got - want).max() <= ONNX_TOLERANCE

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    row = predict(out, [str(tmp_path / "grey.png")]).iloc[0]  # grey → RGB, 50x40 → 32x32; 3 classes → 3 entries
    assert row["error"] == "" and row["predicted"] in ("a", "b", "c") and len(row["top5"].split(";")) == 3
