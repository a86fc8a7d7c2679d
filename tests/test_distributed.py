"""DDP under torchrun, on the CPU with gloo: two processes with batch B train like one process
with batch 2B (losses, metrics and weights equal within floating-point tolerance), rank 0
alone writes and prints, the checkpoints are those of a single process, and an interrupted
run resumes under torchrun (or in one process, with the same global batch)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from seqkit.config import load_recipe
from seqkit.errors import SeqkitError
from seqkit.train import train

from helpers import MOBY, ROOT, SPAM, TINY_CLASSIFIER, TINY_RECIPE, TINY_TAGGER, WNUT, first_lines, first_records, first_sentences, write_jsonl

PROCESSES = 2
BATCH = 4  # per process; the single-process runs train on PROCESSES * BATCH

# Runs several recipes in one torchrun launch (each launch costs seconds of start-up).
TRAIN_ALL = """
import sys
from seqkit.config import load_recipe
from seqkit.train import train
for path in sys.argv[1:]:
    train(load_recipe(path), quiet=True)
"""

# The seqkit CLI with a SIGINT sent to rank 0 alone while it computes its 5th loss.
INTERRUPT_RANK_0 = """
import os, signal, sys
from seqkit.cli import main
from seqkit.tasks import LanguageModelTask

original, calls = LanguageModelTask.loss, [0]

def loss(self, model, chunk, carry):
    calls[0] += 1
    if calls[0] == 5 and os.environ["RANK"] == "0":
        os.kill(os.getpid(), signal.SIGINT)
    return original(self, model, chunk, carry)

LanguageModelTask.loss = loss
main(sys.argv[1:], prog_name="seqkit")
"""


def _torchrun(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={PROCESSES}", *arguments]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Data slices and recipes (batch BATCH per process, no dropout: dropout draws differ
    between one process and two) for a language model (in memory and streamed), a CRF
    tagger and a class-weighted classifier whose last batch holds one example (so one
    process has nothing of it and runs a stand-in)."""
    root = tmp_path_factory.mktemp("ddp")
    data = root / "data"
    data.mkdir()
    for split, lines in (("train", 80), ("valid", 12), ("test", 12)):
        (data / f"{split}.txt").write_text(first_lines(MOBY / f"{split}.txt", lines), encoding="utf-8")
    (data / "train.conll").write_text(first_sentences(WNUT / "train.conll", 40), encoding="utf-8")
    write_jsonl(data / "train.jsonl", first_records(SPAM, 21, per="label")[:41])
    lm = {**TINY_RECIPE, "data": {split: str(data / f"{split}.txt") for split in ("train", "valid", "test")},
          "model": {**TINY_RECIPE["model"], "dropout": 0.0},
          "train": {**TINY_RECIPE["train"], "batch_size": BATCH, "max_steps": 12, "eval_every": 6, "log_every": 3}}  # fmt: skip
    _write_recipe(root / "lm.yaml", {**lm, "output_dir": str(root / "runs" / "lm")})
    _write_recipe(root / "streamed.yaml", {**lm, "data": {**lm["data"], "streaming": True}, "output_dir": str(root / "runs" / "streamed"),
                                           "train": {**lm["train"], "max_steps": 30, "eval_every": 10}})  # fmt: skip
    _write_recipe(root / "tagger.yaml", {**TINY_TAGGER, "output_dir": str(root / "runs" / "tagger"),
                                         "data": {"train": str(data / "train.conll"), "valid": str(data / "train.conll")},
                                         "train": {**TINY_TAGGER["train"], "batch_size": BATCH, "log_every": 2}})  # fmt: skip
    _write_recipe(root / "classifier.yaml", {**TINY_CLASSIFIER, "output_dir": str(root / "runs" / "classifier"),
                                             "data": {**TINY_CLASSIFIER["data"], "train": str(data / "train.jsonl"), "valid": str(data / "train.jsonl")},
                                             "train": {**TINY_CLASSIFIER["train"], "batch_size": BATCH, "log_every": 2, "class_weights": "balanced"}})  # fmt: skip
    (root / "train_all.py").write_text(TRAIN_ALL, encoding="utf-8")
    (root / "interrupt.py").write_text(INTERRUPT_RANK_0, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def ddp_runs(workspace) -> Path:
    """Every recipe trained once by two processes under torchrun."""
    names = ("lm", "streamed", "tagger", "classifier")
    completed = _torchrun("train_all.py", *(f"{name}.yaml" for name in names), cwd=workspace)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return workspace / "runs"


def _single(workspace: Path, name: str, *overrides: str) -> Path:
    """The recipe trained in this process with the global batch (cached per module)."""
    run_dir = workspace / "runs" / f"{name}-single"
    if not (run_dir / "last").is_dir():
        train(load_recipe(workspace / f"{name}.yaml", [f"train.batch_size={PROCESSES * BATCH}", f"output_dir={run_dir}", *overrides]), quiet=True)
    return run_dir


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_same_training(run_dir: Path, reference: Path) -> None:
    """The same records (every number within floating-point tolerance, throughput aside)
    and the same final weights."""
    records, expected = _records(run_dir), _records(reference)
    assert [(r["step"], r["split"]) for r in records] == [(r["step"], r["split"]) for r in expected]
    for record, wanted in zip(records, expected):
        for key, value in wanted.items():
            if key != "tokens_per_sec" and isinstance(value, float):
                assert record[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (record["step"], record["split"], key)
            elif key != "tokens_per_sec":
                assert record[key] == value, (record["step"], record["split"], key)
    # The weights agree to ~1e-6, except where a gradient is nearly 0 (the attention scorer's
    # bias, at first): Adam turns floating-point noise there into full steps. The logged
    # gradient norms above (which Adam would hide) agree to 1e-4.
    weights, wanted = load_file(str(run_dir / "last" / "model.safetensors")), load_file(str(reference / "last" / "model.safetensors"))
    torch.testing.assert_close(weights, wanted, rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", ["lm", "streamed", "tagger", "classifier"])
def test_two_processes_train_like_one_with_the_global_batch(workspace, ddp_runs, name):
    assert_same_training(ddp_runs / name, _single(workspace, name))


def test_checkpoints_from_ddp_are_those_of_one_process(workspace, ddp_runs):
    ddp, single = ddp_runs / "lm", _single(workspace, "lm")
    for checkpoint in ("best", "last"):
        assert sorted(p.name for p in (ddp / checkpoint).iterdir()) == sorted(p.name for p in (single / checkpoint).iterdir())
        assert load_file(str(ddp / checkpoint / "model.safetensors")).keys() == load_file(str(single / checkpoint / "model.safetensors")).keys()
    state = torch.load(ddp / "last" / "trainer_state.pt", weights_only=True)
    assert state.keys() == torch.load(single / "last" / "trainer_state.pt", weights_only=True).keys()
    assert state["world_size"] == PROCESSES and len(state["rng_per_process"]) == PROCESSES
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())


@pytest.fixture(scope="module")
def interrupted(workspace) -> Path:
    """A run under torchrun stopped by a SIGINT to rank 0 alone at step 5 (rank 1 must
    stop at the same step), and a copy of it."""
    run_dir = workspace / "runs" / "interrupted"
    stopped = _torchrun("interrupt.py", "train", "lm.yaml", "--output-dir", str(run_dir), cwd=workspace)
    assert stopped.returncode != 0
    assert stopped.stderr.count("seqkit: interrupted at step 5") == 1, stopped.stderr[-3000:]
    assert f"continue with: torchrun --nproc_per_node {PROCESSES} -m seqkit train lm.yaml --output-dir {run_dir} --resume" in stopped.stderr
    assert torch.load(run_dir / "last" / "trainer_state.pt", weights_only=True)["progress"]["step"] == 5
    shutil.copytree(run_dir, workspace / "runs" / "interrupted-copy")
    return run_dir


def test_interrupted_run_resumes_under_torchrun(workspace, interrupted):
    resumed = _torchrun("-m", "seqkit", "train", "lm.yaml", "--output-dir", str(interrupted), "--resume", cwd=workspace)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = resumed.stdout
    assert out.count("resuming") == 1 and out.count(f"batch {BATCH} per process x {PROCESSES} = {PROCESSES * BATCH} per step") == 1
    assert out.count("trained 12 steps") == 1, out  # rank 0 alone reports
    assert_same_training(interrupted, _single(workspace, "lm"))


def test_a_ddp_run_resumes_in_one_process_with_the_same_global_batch(workspace, interrupted):
    run_dir, recipe = workspace / "runs" / "interrupted-copy", workspace / "lm.yaml"
    with pytest.raises(SeqkitError, match=r"global batches of 8 \(4 per process x 2\); now they would be 4"):
        train(load_recipe(recipe, [f"output_dir={run_dir}"]), resume=True, quiet=True)
    train(load_recipe(recipe, [f"output_dir={run_dir}", f"train.batch_size={PROCESSES * BATCH}"]), resume=True, quiet=True)
    assert_same_training(run_dir, _single(workspace, "lm"))


def test_more_processes_than_gpus_is_one_clear_error(monkeypatch):
    """``torchrun --nproc_per_node 2`` on a machine with one GPU: the second process names
    the mismatch before it touches CUDA (which would fail with "invalid device ordinal")."""
    from seqkit import distributed

    monkeypatch.setattr(distributed, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail("set_device reached"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(SeqkitError, match=r"process 1 of this machine, which would train on cuda:1, but 1 GPU is visible: use --nproc_per_node 1"):
        distributed.setup("cuda")
