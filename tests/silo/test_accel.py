"""Precision, channels_last and torch.compile (silo.accel), trained for real on the CPU.

bf16 is judged against fp32 over seeds (it changes results); channels_last and compile
change rounding only, so they are checked against the plain run in float64."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch._dynamo.utils import counters

from oracle.cli import main
from oracle.store.identity import RunKey
from silo.accel import Accel, CompileCache, ExecutionConfig, PrecisionUnsupported, check_precision
from silo.config import DataConfig, PruningConfig, ShapeConfig, TaskConfig
from silo.data import DataCache
from silo.round import train_round
from silo.train import train_run
from tests.silo.test_round import assert_same_run, synthetic, tiny_task

SMOKE_TASK = TaskConfig(data=DataConfig(name="mnist1d", num_samples=1200), epochs=1, device="cpu",
                        shape=ShapeConfig(warmup="0.2ep", milestones=("0.8ep",)), pruning=PruningConfig(rate=0.2))


def _pruned_weights_are_zero(result) -> bool:
    weights = result.state.weights
    return all(bool((weights[name][~keep] == 0).all()) for name, keep in result.state.mask.items())


def _chain(task, seed, cache, max_lr=0.1):
    """The dense run and one pruned cycle from it."""
    dense = train_run(task, seed=seed, cycle=0, max_lr=max_lr, cache=cache)
    return dense, train_run(task, seed=seed, cycle=1, max_lr=max_lr, parent=dense.state, cache=cache)


def test_bf16_trains_the_smoke_task_as_well_as_fp32_and_keeps_masks_exact():
    cache = DataCache()
    bf16_task = SMOKE_TASK.model_copy(update={"precision": "bf16"})
    fp32 = [_chain(SMOKE_TASK, seed, cache) for seed in (0, 1)]
    bf16 = [_chain(bf16_task, seed, cache) for seed in (0, 1)]
    for cycle in (0, 1):
        for split in ("val_acc", "test_acc"):
            a = sum(getattr(runs[cycle].metrics, split) for runs in fp32) / 2
            b = sum(getattr(runs[cycle].metrics, split) for runs in bf16) / 2
            assert abs(a - b) <= 0.05, (cycle, split, a, b)
            assert b > 0.2  # well above chance (0.1): it trained
    for (d32, p32), (d16, p16) in zip(fp32, bf16):
        assert p16.metrics.status == "ok" and p16.metrics.sparsity == pytest.approx(0.2, abs=0.01)
        # Autocast really ran: bf16 rounding gives other weights than fp32.
        assert not torch.equal(d16.state.weights["classifier.weight"], d32.state.weights["classifier.weight"])
        # The master weights stay float32, and pruned weights exactly zero.
        assert all(w.dtype == torch.float32 for w in p16.state.weights.values() if w.is_floating_point())
        assert _pruned_weights_are_zero(p16) and _pruned_weights_are_zero(p32)


def test_precision_is_in_the_run_key_only_off_its_default():
    run = dict(seed=1, cycle=0, max_lr=0.03, parent_run_id=None)
    smoke = TaskConfig(data=DataConfig(name="mnist1d", num_samples=1200), epochs=1,
                       shape=ShapeConfig(warmup="0.2ep", milestones=("0.8ep",)))
    fp32 = RunKey(smoke.model_copy(update={"precision": "fp32"}), **run)
    assert fp32.run_id == "3fefadca91bb4876"  # tests/test_identity.py's pinned smoke id
    ids = {fp32.run_id} | {RunKey(smoke.model_copy(update={"precision": p}), **run).run_id for p in ("bf16", "fp16")}
    assert len(ids) == 3
    assert RunKey(smoke.model_copy(update={"precision": "bf16"}), **run).payload()["task"]["precision"] == "bf16"


NYI = "NYI: querying is_contiguous inside of vmap for memory_format other than torch.contiguous_format"


@pytest.fixture
def cuda_like_batch_norm(monkeypatch):
    """F.batch_norm refusing a batched channels_last 4-D input, as CUDA's does under vmap
    (the CPU kernel never asks for the memory format, so on a CPU it runs)."""
    real = torch.nn.functional.batch_norm

    def batch_norm(x, *args, **kwargs):
        if x.dim() == 4 and torch._C._functorch.is_batchedtensor(x) and x.stride(1) == 1:
            raise RuntimeError(NYI)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "batch_norm", batch_norm)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap: adaptive pool on NHWC
def test_channels_last_changes_nothing_but_the_memory_format_float64(float64, cuda_like_batch_norm):
    task = tiny_task("resnet20", {}, steps=3, n_train=16)
    data = synthetic((3, 8, 8), n_train=16)
    on, off = ExecutionConfig(channels_last="on"), ExecutionConfig(channels_last="off")
    parent = train_run(task, seed=0, cycle=0, max_lr=0.05, data=data).state
    plain = train_run(task, seed=0, cycle=1, max_lr=0.05, parent=parent, data=data, execution=off)
    nhwc = train_run(task, seed=0, cycle=1, max_lr=0.05, parent=parent, data=data, execution=on)
    assert nhwc.state.weights["conv1.weight"].is_contiguous(memory_format=torch.channels_last)
    assert not plain.state.weights["conv1.weight"].is_contiguous(memory_format=torch.channels_last)
    assert_same_run(nhwc, plain)
    assert _pruned_weights_are_zero(nhwc)
    # Fused with channels_last on, under a BatchNorm that refuses channels_last inside vmap as
    # CUDA's does: the round fuses (it runs contiguous), and its members are the plain runs.
    rounds = {ex.channels_last: train_round(task, seed=0, cycle=1, max_lrs=[0.02, 0.05], parent=parent, data=data,
                                            mode="fused", execution=ex) for ex in (on, off)}
    for f_on, f_off in zip(rounds["on"], rounds["off"]):
        assert_same_run(f_on, f_off, tol=0)
    assert_same_run(rounds["on"][1], plain)


def test_the_simulated_batch_norm_refuses_what_a_channels_last_fused_step_would_give(float64, cuda_like_batch_norm):
    from silo.fused import FusedStack, fused_losses
    from silo.models import MODELS
    from silo.pruning import Mask

    model = MODELS["resnet20"](num_classes=4, in_channels=3)
    members = FusedStack.copies(model, 2, tiny_task("resnet20", {}), Mask({}),
                              Accel.for_run("fp32", None, model, torch.device("cpu"), fused=True))
    xb = synthetic((3, 8, 8)).train_x[:4]
    args = (members.model, members.params, members.buffers)
    with pytest.raises(RuntimeError, match="NYI: querying is_contiguous inside of vmap"):
        fused_losses(*args, xb.contiguous(memory_format=torch.channels_last), torch.zeros(4, dtype=torch.long),
                     0.0, None, None)
    assert fused_losses(*args, xb, torch.zeros(4, dtype=torch.long), 0.0, None, None).shape == (2,)


def test_auto_picks_only_what_was_measured_to_pay_on_cuda():
    from silo.models import MODELS

    resnet = MODELS["resnet20"](num_classes=10, in_channels=3)
    cnn1d = MODELS["mnist1d_cnn"](num_classes=10, in_channels=1)
    auto, cpu, cuda = ExecutionConfig(), torch.device("cpu"), torch.device("cuda")
    # Resolution reads only the device's type; nothing is allocated on it.
    lone = Accel.for_run("fp32", auto, resnet, cuda)
    assert lone.cudnn_benchmark and not lone.channels_last and lone.compile is None  # fp32 eager
    # Low precision (fp16 here: bf16 would ask the driver whether the GPU has it): bf16 trained
    # 14.8k img/s with channels_last, 12.6k without.
    assert Accel.for_run("fp16", auto, resnet, cuda).channels_last
    fused = Accel.for_run("fp16", ExecutionConfig(channels_last="on"), resnet, cuda, fused=True)
    assert not fused.channels_last and fused.compile is not None  # a fused round: contiguous, compiled
    assert Accel.for_run("fp32", auto, resnet, cpu, fused=True).compile is None  # nothing auto on a CPU
    assert not Accel.for_run("bf16", auto, resnet, cpu).channels_last
    flat = Accel.for_run("fp16", auto, cnn1d, cuda)
    assert not flat.channels_last and not flat.cudnn_benchmark
    assert Accel.for_run("fp32", ExecutionConfig(channels_last="on"), cnn1d, cpu).channels_last
    assert Accel.for_run("fp32", ExecutionConfig(compile="on"), cnn1d, cpu).compile is not None
    assert Accel.for_run("fp32", ExecutionConfig(compile="off"), resnet, cuda, fused=True).compile is None


@pytest.mark.integration
def test_compile_matches_eager_float64_and_compiles_once_per_process(float64):
    task = tiny_task("mnist1d_mlp", {"width": 16}, steps=4)
    data = synthetic((1, 40))
    compiled = CompileCache()
    execution = ExecutionConfig(compile="on")
    eager = train_run(task, seed=0, cycle=0, max_lr=0.1, data=data)
    first = train_run(task, seed=0, cycle=0, max_lr=0.1, data=data, execution=execution, compiled=compiled)
    assert_same_run(first, eager)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1  # dynamo really captured the step
    # The next run of this process (another seed: another model object) reuses the code.
    again = train_run(task, seed=1, cycle=0, max_lr=0.1, data=data, execution=execution, compiled=compiled)
    assert counters["stats"]["unique_graphs"] == graphs
    assert_same_run(again, train_run(task, seed=1, cycle=0, max_lr=0.1, data=data))


def test_a_model_that_fails_to_compile_trains_eagerly_after_one_line(float64, monkeypatch, capfd):
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()  # nothing compiled earlier may stand in for this compilation
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/c++",))
    task = tiny_task("mnist1d_cnn", {"width": 4}, steps=3)
    data = synthetic((1, 40))
    try:
        tried = train_run(task, seed=2, cycle=0, max_lr=0.1, data=data, execution=ExecutionConfig(compile="on"))
    finally:
        torch._dynamo.reset()
    lines = [line for line in capfd.readouterr().err.splitlines() if "torch.compile failed" in line]
    assert len(lines) == 1 and lines[0].endswith("training without compile"), lines
    # The failed attempt left no trace: BatchNorm's stats were restored before the eager step.
    assert_same_run(tried, train_run(task, seed=2, cycle=0, max_lr=0.1, data=data), tol=0)


def test_fp16_is_refused_on_a_cpu():
    task = tiny_task("mnist1d_mlp", {"width": 8}, steps=2, precision="fp16")
    with pytest.raises(PrecisionUnsupported, match="task.precision fp16 needs a CUDA GPU"):
        train_run(task, seed=0, cycle=0, max_lr=0.1, data=synthetic((1, 40)))
    check_precision("bf16", torch.device("cpu"))  # bf16 runs on any CPU


def test_bf16_on_a_gpu_without_it_is_refused_naming_the_gpu(monkeypatch):
    # What a pre-Ampere GPU answers (this machine has none): the check's message, not a result.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(PrecisionUnsupported, match=r"bf16: Tesla T4 \(compute capability 7.5\) has no bfloat16"):
        check_precision("bf16", torch.device("cuda"))
    check_precision("fp16", torch.device("cuda"))


@pytest.mark.parametrize("changes, phrase", [
    ({"task": {"precision": "fp16"}}, "task.precision: fp16 needs a CUDA GPU, but the trials train on a CPU "
                                      "(resources.gpu is 0)"),
    ({"task": {"precision": "fp16", "device": "cpu"}, "resources": {"gpu": 1}}, "(task.device is cpu)"),
    ({"task": {"precision": "fp8"}}, "task.precision:"),
    ({"execution": {"compile": "yes"}}, "execution.compile:"),
    ({"execution": {"channels_last": "always"}}, "execution.channels_last:"),
])
def test_bad_precision_and_execution_settings_are_refused_in_one_line(write_study, capsys, changes, phrase):
    path = write_study("bad", changes)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and phrase in err[0], err


def test_execution_words_on_and_off_read_as_words(write_study, capsys):
    path = write_study("words", {})
    path.write_text(path.read_text() + "execution: {compile: on, channels_last: off, fuse: off}\n")
    assert main(["validate", str(path)]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out.split("\n", 1)[1])
    assert resolved["execution"]["compile"] == "on" and resolved["execution"]["channels_last"] == "off"
    assert resolved["execution"]["fuse"] == "off"


def test_every_trial_carries_the_studys_execution_settings(write_study, tmp_path):
    from oracle.study import load_study
    from oracle.sweep.searcher import StudySearcher

    path = write_study("carried", {"execution": {"compile": "on", "channels_last": "off", "fuse": "on"}})
    searcher = StudySearcher(load_study(path), store=str(tmp_path / "runs"), threads=1,
                             on_round_closed=lambda *a: None)
    config = searcher.suggest("trial-1")
    assert ExecutionConfig.model_validate(config["execution"]) == ExecutionConfig(compile="on", channels_last="off")
    assert config["fuse"] == "on"
