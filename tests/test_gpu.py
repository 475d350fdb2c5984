"""GPUs: the device logic and the per-trial GPU resources, tested on CPU; one real CUDA run.

The CPU tests run everywhere (no GPU is touched: the cluster is described by `ray.nodes()`-like
dicts and `torch.cuda.is_available` is patched where needed). The test marked `gpu` trains an
epoch on CUDA with AMP and channels_last and checks the memory is given back; it is skipped on a
machine without CUDA (`pytest -m gpu tests/test_gpu.py` on a GPU machine).
"""
from __future__ import annotations

import gc
import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from search.cluster import check_resources
from search.spec import load_spec
from search.tuner import tune_trainable_for, with_flags
from tests._search_helpers import QUICKSTART
from trainables.data import create_dataset
from trainables.errors import UserError
from trainables.train import Trainer, plan_for, select_device


def _spec(**resources: float):
    return with_flags(load_spec(QUICKSTART), overrides=[f"resources.{k}={v}" for k, v in resources.items()])


def _node(cpu: float, gpu: float = 0, alive: bool = True, host: str = "10.0.0.1") -> dict[str, Any]:
    resources = {"CPU": cpu, "memory": 8e9, **({"GPU": gpu} if gpu else {})}  # Ray lists GPU only when there is one
    return {"NodeID": f"{host}-{cpu}-{gpu}", "Alive": alive, "NodeManagerAddress": host, "Resources": resources}


# ----------------------------------------------------------------------------------------------
# Device choice (CPU only)


def test_auto_picks_cuda_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda") == torch.device("cuda")
    assert select_device("cpu") == torch.device("cpu")  # an explicit cpu is kept on a GPU machine


def test_an_unavailable_cuda_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="device 'cuda' is not available"):
        select_device("cuda")


def test_cuda_plan_uses_amp_channels_last_and_resident_data():
    plan = plan_for(torch.device("cuda"), data_in_memory=True)
    assert (plan.amp, plan.channels_last, plan.resident_data) == (True, True, True)
    assert plan_for(torch.device("cuda"), data_in_memory=False).resident_data is False  # streamed files stay on the host
    cpu = plan_for(torch.device("cpu"), data_in_memory=True)
    assert (cpu.amp, cpu.channels_last, cpu.resident_data) == (False, False, False)
    assert (plan.eval_batch_size, cpu.eval_batch_size) == (1024, 128)  # large batches pay on a GPU, cost a CPU its caches


# ----------------------------------------------------------------------------------------------
# Per-trial resources


def test_fractional_gpu_in_the_spec_becomes_the_trials_tune_resources():
    spec = _spec(cpu=2, gpu=0.25)
    assert (spec.resources.cpu, spec.resources.gpu) == (2, 0.25)
    data = create_dataset(spec.dataset, **spec.dataset_options)
    trainable = tune_trainable_for(spec, data)  # what build_tuner hands to tune.Tuner
    request = trainable._resources  # tune.with_resources' PlacementGroupFactory
    assert request.required_resources == {"CPU": 2.0, "GPU": 0.25}  # 4 trials share one GPU
    assert request.bundles == [{"CPU": 2.0, "GPU": 0.25}]
    assert spec.settings().threads == 2  # torch threads follow the trial's CPUs


def test_cpu_only_spec_asks_for_no_gpu():
    spec = _spec(cpu=1, gpu=0)
    data = create_dataset(spec.dataset, **spec.dataset_options)
    assert tune_trainable_for(spec, data)._resources.required_resources == {"CPU": 1.0}


def test_gpu_above_one_must_be_whole():
    with pytest.raises(UserError, match="whole number"):
        _spec(gpu=1.5)


def test_gpu_trials_are_refused_on_a_cluster_without_gpu():
    spec = _spec(gpu=0.25)
    with pytest.raises(UserError) as info:
        check_resources(spec, [_node(2), _node(4, host="10.0.0.2"), _node(8, gpu=1, alive=False)])
    message = str(info.value)
    assert "\n" not in message
    assert "resources.gpu=0.25" in message and "no GPU" in message and "largest node: 4 CPU" in message
    assert "--set resources.gpu=0" in message


def test_fractional_gpu_fits_a_node_with_one_gpu():
    check_resources(_spec(cpu=1, gpu=0.25), [_node(2), _node(4, gpu=1, host="10.0.0.2")])
    check_resources(_spec(cpu=1, gpu=1), [_node(4, gpu=1)])
    check_resources(_spec(cpu=1, gpu=0), [_node(4, gpu=1)])  # a CPU trial may use a GPU node's CPUs


def test_more_gpus_than_any_node_has_are_refused():
    with pytest.raises(UserError, match="resources.gpu=2 but the largest node has 1 GPU"):
        check_resources(_spec(gpu=2), [_node(8, gpu=1), _node(8, gpu=1, host="10.0.0.2")])


def test_cpus_and_gpus_must_be_on_the_same_node():
    # 8 CPUs on one node and a GPU on another: a trial asking for 2 CPUs + 1 GPU would stay PENDING.
    with pytest.raises(UserError, match="no single node has resources.cpu=2 and resources.gpu=1"):
        check_resources(_spec(cpu=2, gpu=1), [_node(8), _node(1, gpu=1, host="10.0.0.2")])


# ----------------------------------------------------------------------------------------------
# A real CUDA epoch


def _cuda_allocated() -> int:
    """Bytes held by tensors on the current CUDA device, cuBLAS workspaces excluded (they are cached per stream)."""
    gc.collect()
    torch.cuda.synchronize()
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
    return torch.cuda.memory_allocated()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_cuda_epoch_with_amp_and_channels_last_then_memory_is_released():
    spec = load_spec(QUICKSTART)
    data = create_dataset(spec.dataset, **spec.dataset_options)
    settings = replace(spec.settings(max_epochs=1), device="cuda", loader_workers=0)
    baseline = _cuda_allocated()

    trainer = Trainer(spec.baseline, data, settings)
    assert trainer.plan.device.type == "cuda"
    assert trainer.plan.amp and trainer.plan.channels_last and trainer.plan.resident_data
    params = list(trainer.model.parameters())
    assert all(p.is_cuda for p in params)
    conv = next(p for p in params if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    param_bytes = sum(p.numel() * p.element_size() for p in params)

    metrics = trainer.run_round()
    assert trainer.finished and metrics["round"] == 1
    assert math.isfinite(metrics["train_loss"]) and metrics["val_acc"] > 0.3  # ~0.43 after one epoch on CPU
    assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() > 0  # AMP's loss scaling was used
    assert _cuda_allocated() - baseline >= param_bytes  # model, optimizer state and resident data live on the GPU

    trainer.close()
    # close() frees the model, the optimizer and the device copy of the data; what may stay until
    # the Trainer itself goes are a few scalars (GradScaler's scale, the normaliser's mean/std).
    assert _cuda_allocated() - baseline <= 8 * 1024, f"{_cuda_allocated() - baseline} bytes left after close()"
    del trainer, params, conv
    assert _cuda_allocated() == baseline
