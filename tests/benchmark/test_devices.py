"""resolve_device: auto/cpu/cuda spellings and clear errors."""

from __future__ import annotations

import pytest
import torch

from benchmark.devices import DeviceError, resolve_device


def test_cpu_and_auto():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda0", "", "tpu"])
def test_unknown_spelling(bad):
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_requested_without_gpu(spec):
    with pytest.raises(DeviceError, match="CUDA is not available.*--device cpu"):
        resolve_device(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_index_range():
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(DeviceError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
