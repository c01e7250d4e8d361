"""The CUDA-only checks of bench/gpu_check.py (`pytest -m cuda`); skipped without CUDA.

The same functions print the first part of gpu_check's table, so a bare GPU machine without
pytest runs them too."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tests._repo import REPO

pytestmark = pytest.mark.cuda


def _gpu_check():
    path = REPO / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return _gpu_check()


CUDA = torch.device("cuda")


def test_data_is_on_the_device(gpu_check):
    ok, detail = gpu_check.check_data_on_device(CUDA)
    assert ok, detail


def test_fused_equals_sequential_on_cuda_float64(gpu_check):
    ok, detail = gpu_check.check_fused_equals_sequential_float64(CUDA)
    assert ok, detail


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_trains_and_masks_stay_zero(gpu_check, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no bfloat16 (the refusal is tested on the CPU)")
    ok, detail = gpu_check.check_precision_trains(CUDA, precision)
    assert ok, detail
