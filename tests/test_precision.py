"""``train.precision``: ``auto`` chooses from what the device can do, an explicit bf16 or
fp16 the device cannot run is refused before any work, and a failure inside torch during
training is one line, with the traceback in ``error.log`` and the checkpoints intact."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import seqkit
from seqkit import runtime
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.errors import RecipeError
from seqkit.runtime import resolve_precision
from seqkit.tasks import LanguageModelTask
from seqkit.train import train

CPU = torch.device("cpu")


def _cpu_flags(monkeypatch, **flags: bool) -> None:
    """Pretend the CPU has (or lacks) these feature flags (``torch.cpu.get_capabilities``)."""
    capabilities = {**torch.cpu.get_capabilities(), "avx512_bf16": False, "amx_bf16": False, **flags}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)


def _bf16_fails(monkeypatch, problem: str = "PyTorch cannot run an LSTM in bf16 on this CPU (no primitive)") -> None:
    monkeypatch.setattr(runtime, "_bf16_problem", lambda device, cell: problem if cell == "lstm" else None)


def test_auto_is_fp32_on_a_cpu_without_native_bf16_and_says_why(monkeypatch):
    _cpu_flags(monkeypatch)
    choice = resolve_precision("auto", CPU, {"lstm"})
    assert (choice.chosen, choice.describe()) == ("fp32", "precision: auto -> fp32 (this CPU has no native bf16)")


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_is_bf16_where_the_cpu_has_it_natively_and_the_cell_runs(monkeypatch, flag):
    _cpu_flags(monkeypatch, **{flag: True})
    monkeypatch.setattr(runtime, "_bf16_problem", lambda device, cell: None)
    assert resolve_precision("auto", CPU, {"lstm"}).describe() == "precision: auto -> bf16 (this CPU has native bf16)"
    _bf16_fails(monkeypatch)  # native flags, but oneDNN has no kernel for the cell: fp32, and why
    choice = resolve_precision("auto", CPU, {"gru", "lstm"})
    assert choice.chosen == "fp32" and "has native bf16, but PyTorch cannot run an LSTM in bf16" in choice.reason
    assert resolve_precision("auto", CPU, {"gru"}).chosen == "bf16"


def test_explicit_bf16_that_cannot_run_is_a_recipe_error_naming_the_key_and_the_fix(monkeypatch):
    _bf16_fails(monkeypatch)
    with pytest.raises(RecipeError, match=r"^train\.precision: bf16 cannot run here: PyTorch cannot run an LSTM in bf16 on this CPU "
                                          r"\(no primitive\); set train\.precision: auto \(bf16 only where it runs\) or fp32$"):  # fmt: skip
        resolve_precision("bf16", CPU, {"lstm"})
    with pytest.raises(RecipeError, match=r"^train\.precision: fp16 needs CUDA"):
        resolve_precision("fp16", CPU, {"gru"})
    assert resolve_precision("fp32", CPU, {"lstm"}).chosen == "fp32"


def test_the_real_bf16_probe_agrees_with_a_real_bf16_step():
    """On this machine, whatever its CPU: either bf16 is refused in one line, or a bf16
    LSTM really trains a step (the probe never lets a kernel error through)."""
    try:
        choice = resolve_precision("bf16", CPU, {"lstm"})
    except RecipeError as error:
        assert "PyTorch cannot run an LSTM in bf16 on this CPU" in str(error)
        return
    assert choice.chosen == "bf16"
    lstm, inputs = torch.nn.LSTM(8, 8, batch_first=True), torch.randn(2, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        states, _ = lstm(inputs)
    states.float().sum().backward()
    assert lstm.weight_hh_l0.grad is not None


def test_training_prints_the_choice_and_config_yaml_records_request_and_choice(tiny_recipe, monkeypatch):
    _cpu_flags(monkeypatch)
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "train.precision=auto", "--set", "train.max_steps=2"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "precision: auto -> fp32 (this CPU has no native bf16)" in result.output.splitlines()
    config_text = Path("runs/tiny/config.yaml").read_text()
    assert "  precision: auto  # -> fp32 here (this CPU has no native bf16)\n" in config_text
    assert yaml.safe_load(config_text)["train"]["precision"] == "auto"
    assert load_recipe("runs/tiny/config.yaml").train.precision == "auto"  # the run's config still trains as a recipe
    checkpoint = yaml.safe_load(Path("runs/tiny/best/config.yaml").read_text())
    assert (checkpoint["train"]["precision"], checkpoint["checkpoint"]["precision"]) == ("auto", "fp32")


def test_bf16_that_cannot_run_stops_before_training_and_keeps_the_run_it_would_overwrite(tiny_recipe, monkeypatch):
    train(load_recipe(tiny_recipe, ["train.max_steps=2"]), quiet=True)
    before = sorted(path.name for path in Path("runs/tiny").iterdir())
    _bf16_fails(monkeypatch)
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "train.precision=bf16", "--overwrite"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "seqkit: error: train.precision: bf16 cannot run here: PyTorch cannot run an LSTM in bf16 on this CPU (no primitive); "
        "set train.precision: auto (bf16 only where it runs) or fp32"
    ]
    assert sorted(path.name for path in Path("runs/tiny").iterdir()) == before
    assert seqkit.load("runs/tiny/best", device="cpu").info["step"] == 2


def test_a_failure_inside_torch_is_one_line_with_the_traceback_in_error_log_and_last_intact(tiny_recipe, monkeypatch):
    original, calls = LanguageModelTask.loss, itertools.count(1)

    def loss(self, model, chunk, carry):
        if next(calls) == 13:  # like oneDNN refusing a kernel in the middle of a run
            raise RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive. Run workload ...")
        return original(self, model, chunk, carry)

    monkeypatch.setattr(LanguageModelTask, "loss", loss)
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--quiet"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "seqkit: error: step 13 (epoch 1, batch 13 of 25): RuntimeError inside PyTorch: could not create a primitive descriptor "
        "for the LSTM forward propagation primitive. Run workload ...; the full traceback is in runs/tiny/error.log; "
        "intact: runs/tiny/best (step 10), runs/tiny/last (step 10)"
    ]
    log = Path("runs/tiny/error.log").read_text()
    assert log.startswith("Traceback (most recent call last):") and "in loss" in log and log.rstrip().endswith("Run workload ...")
    assert seqkit.load("runs/tiny/last", device="cpu").info["step"] == 10
    assert torch.load("runs/tiny/last/trainer_state.pt", weights_only=True)["progress"]["step"] == 10
    records = [json.loads(line) for line in Path("runs/tiny/metrics.jsonl").read_text().splitlines()]
    assert max(record["step"] for record in records) == 10


def test_a_failure_in_an_evaluation_names_the_evaluation(tiny_recipe, monkeypatch):
    def evaluate(self, model, precision="fp32", split="valid"):
        raise RuntimeError("out of memory\nmore details on a second line")

    monkeypatch.setattr(LanguageModelTask, "evaluate", evaluate)
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--quiet"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqkit: error: the evaluation after step 10: RuntimeError inside PyTorch: out of memory; ")
    assert lines[0].endswith("no checkpoint was saved yet")


def test_the_cpu_is_described_for_speed_figures(monkeypatch):
    from seqkit.runtime import describe_cpu

    _cpu_flags(monkeypatch)
    assert describe_cpu().endswith(", no native bf16")
    _cpu_flags(monkeypatch, avx512_bf16=True)
    assert describe_cpu().endswith(", native bf16")


def test_training_prints_its_threads_and_config_yaml_records_them(tiny_recipe, monkeypatch):
    """``train.threads: auto`` says what it chose and why, like precision; ``--threads N``
    is ``--set train.threads=N``."""
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "train.max_steps=2"])
        assert result.exit_code == 0, result.output + result.stderr
        assert f"threads: auto -> {before} (set by OMP_NUM_THREADS)" in result.output.splitlines()  # the suite pins it (conftest)
        config_text = Path("runs/tiny/config.yaml").read_text()
        assert f"  threads: auto  # -> {before} here (set by OMP_NUM_THREADS)\n" in config_text
        forced = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "train.max_steps=2", "--threads", "1", "--output-dir", "runs/one"])
        assert forced.exit_code == 0, forced.output + forced.stderr
        assert "threads: 1 -> 1 (as asked)" in forced.output.splitlines() and torch.get_num_threads() == 1
        assert load_recipe("runs/one/config.yaml").train.threads == 1
    finally:
        torch.set_num_threads(before)
