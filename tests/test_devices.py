"""One device rule for every package: library errors are ValueErrors, commands exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from benchmark.commands.synth import synth
from retrieval import devices
from retrieval.devices import DeviceUnavailableError, autocast, choose_device, resolve_device
from retrieval.embed import load_embedder


@pytest.fixture()
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_without_cuda_is_cpu_and_cpu_is_always_cpu(no_cuda: None) -> None:
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_auto_with_a_gpu_is_cuda() -> None:
    assert choose_device("auto", gpu_available=True, backend="torch") == "cuda"


def test_cuda_without_cuda_is_a_domain_error_saying_who_sees_no_gpu(no_cuda: None) -> None:
    with pytest.raises(DeviceUnavailableError, match="'cuda' requested but torch sees no GPU"):
        resolve_device("cuda")


def test_unknown_device_names_the_choices() -> None:
    with pytest.raises(DeviceUnavailableError, match=r"auto, cpu, cuda, got 'tpu'"):
        choose_device("tpu", gpu_available=True, backend="torch")


def test_library_loader_raises_the_domain_error_not_a_click_error(no_cuda: None) -> None:
    # Before the device check moved out of the CLI code this raised click.BadParameter.
    with pytest.raises(DeviceUnavailableError, match="no GPU"):
        load_embedder("blur-aware", device="cuda")


def test_command_turns_the_domain_error_into_a_usage_error(no_cuda: None, tmp_path) -> None:
    result = CliRunner().invoke(synth, [str(tmp_path / "out"), "--preset", "tiny",
                                        "--device", "cuda", "-q"])
    assert result.exit_code == 2
    assert "--device" in result.output and "torch sees no GPU" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("bf16", "expected"), [
    (True, {"dtype": torch.bfloat16}),
    (False, {"enabled": False}),  # float32, never float16, on GPUs without bfloat16
])
def test_autocast_prefers_bfloat16_else_float32(monkeypatch: pytest.MonkeyPatch, bf16: bool,
                                               expected: dict) -> None:
    calls = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, **kwargs: calls.append(
        (device_type, kwargs)))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    autocast(torch.device("cuda"))
    autocast(torch.device("cpu"))
    assert calls == [("cuda", expected), ("cpu", {"enabled": False})]


def test_the_index_layer_uses_the_same_rule() -> None:
    from indexer import gpu
    from indexer.errors import DeviceError

    assert issubclass(DeviceError, devices.DeviceUnavailableError)
    with pytest.raises(DeviceError, match="got 'tpu'"):
        gpu.resolve_device("tpu")


@pytest.mark.parametrize(("device", "native", "expected"), [
    ("cpu", True, "fp32"), ("cpu", False, "fp32"), ("cuda", True, "bf16"), ("cuda", False, "fp32"),
])
def test_auto_training_precision_is_bfloat16_on_gpus_that_have_it_and_float32_on_cpus(
        monkeypatch: pytest.MonkeyPatch, device: str, native: bool, expected: str) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: native)
    assert devices.training_precision("auto", torch.device(device)) == expected
    # An explicit choice is kept whatever the hardware.
    assert devices.training_precision("fp32", torch.device(device)) == "fp32"
    assert devices.training_precision("bf16", torch.device(device)) == "bf16"


def test_unknown_training_precision_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"auto, fp32, bf16, got 'fp16'"):
        devices.training_precision("fp16", torch.device("cpu"))


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_training_autocast_runs_convolutions_in_the_resolved_precision(precision: str,
                                                                       dtype: torch.dtype) -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    with devices.training_autocast(torch.device("cpu"), precision):
        out = conv(torch.randn(1, 3, 8, 8))
    assert out.dtype == dtype and conv.weight.dtype == torch.float32  # weights stay float32


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_training_scripts_pick_bfloat16_only_where_it_is_fast(device: str) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "lib" / "precision.sh"
    result = subprocess.run(["bash", "-c", f'. "{script}"; fast_precision {device} "{sys.executable}"'],
                            capture_output=True, text=True, check=True)
    native = devices.cpu_has_native_bf16()
    assert result.stdout.strip() == ("bf16" if device == "cuda" or native else "fp32")
