"""What training writes as it goes: the running sums behind each log line (``Meter``),
``metrics.jsonl`` (strict JSON, one record per line), TensorBoard scalars, the recipe as
HParams, and the run's annotated ``config.yaml``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from .. import distributed
from ..config import Recipe, dump_recipe
from ..runtime import Precision, Threads


class Meter:
    """Sums over the steps since the last log line (and since the last evaluation), kept
    on the device so that training never waits for a ``.item()``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss*n, n, grad norm, max grad norm, steps
        self.eval_sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss*n, n since the last evaluation
        self.started = time.perf_counter()
        self.paused_at: Optional[float] = None
        self.logs = 0
        self.steady = [0.0, 0.0]  # tokens, seconds after the first log interval

    def add(self, loss: torch.Tensor, num_targets: torch.Tensor, grad_norm: torch.Tensor) -> None:
        weighted = loss.double() * num_targets
        grad_norm = grad_norm.double()
        self.sums += torch.stack([weighted, num_targets.double(), grad_norm, torch.zeros_like(grad_norm), torch.ones_like(grad_norm)])
        self.sums[3] = torch.maximum(self.sums[3], grad_norm)
        self.eval_sums += torch.stack([weighted, num_targets.double()])

    def log(self, writer: SummaryWriter, step: int, lr: float) -> dict[str, float]:
        seconds = time.perf_counter() - self.started
        loss_sum, tokens, grad_sum, grad_max, steps = self.sums.tolist()
        logged = {
            "loss": loss_sum / tokens if tokens else float("nan"),  # nan: every batch of the interval was skipped
            "lr": lr,
            "grad_norm": grad_sum / max(steps, 1.0),
            "grad_norm_max": grad_max,
            "tokens_per_sec": tokens / max(seconds, 1e-9),
        }
        for name, value in logged.items():
            writer.add_scalar(f"train/{name}", value, step)
        self.logs += 1
        if self.logs > 1:  # the first interval holds warm-up costs
            self.steady[0] += tokens
            self.steady[1] += seconds
        self.sums.zero_()
        self.started = time.perf_counter()
        return logged

    def take_eval_loss(self) -> float:
        loss_sum, tokens = self.eval_sums.tolist()
        self.eval_sums.zero_()
        return loss_sum / tokens if tokens else float("nan")

    def pause(self) -> None:
        self.paused_at = time.perf_counter()

    def resume(self) -> None:
        self.started += time.perf_counter() - (self.paused_at or time.perf_counter())

    def steady_tokens_per_sec(self) -> float:
        return self.steady[0] / self.steady[1] if self.steady[1] else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums.cpu(), "eval_sums": self.eval_sums.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = state["sums"].to(self.device)
        self.eval_sums = state["eval_sums"].to(self.device)


def log_hparams(writer: SummaryWriter, recipe: Recipe, task) -> None:
    """The recipe as TensorBoard hyperparameters (HParams tab) and as text."""
    flat = {}
    for section, values in recipe.model_dump(mode="json").items():
        items = values.items() if isinstance(values, dict) else [(None, values)]
        for key, value in items:
            name = f"{section}.{key}" if key else section
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    experiment, session_start, session_end = hparams(flat, {f"valid/{task.metric}": float("nan")})
    file_writer = writer._get_file_writer()
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary)
    writer.add_text("recipe", "    " + dump_recipe(recipe).replace("\n", "\n    "))


def annotated_config(recipe: Recipe, precision: Precision, threads: Threads) -> str:
    """The run's ``config.yaml``: the resolved recipe, its precision and threads lines saying
    what ``auto`` chose on this machine (comments, so the file still trains as a recipe)."""
    text = dump_recipe(recipe)
    for key, choice in (("precision", precision), ("threads", threads)):
        if choice.requested != str(choice.chosen):
            line = f"  {key}: {choice.requested}\n"
            text = text.replace(line, f"{line[:-1]}  # -> {choice.chosen} here ({choice.reason})\n", 1)
    return text


def describe_evaluation(record: dict[str, Any], task, select_on: str = "auto") -> str:
    """The evaluation's log line; with ``train.select_on`` set, the metric that picks ``best/`` at its end."""
    line = f"step {record['step']:>6}  epoch {record['epoch']:.2f}  train loss {record['train_loss']:.4f}  valid {task.describe(record)}"
    if select_on != "auto":
        line += f"  (select on {task.metric} {record[task.metric]:.4f})"
    return line


def add_scalars(writer: SummaryWriter, split: str, metrics: dict[str, Any], step: int) -> None:
    """The numbers among ``metrics`` as TensorBoard scalars (nested per-type scores too)."""
    for name, value in metrics.items():
        if isinstance(value, dict):
            add_scalars(writer, f"{split}/{name}", value, step)
        elif isinstance(value, (int, float)):
            writer.add_scalar(f"{split}/{name}", value, step)


def append_record(path: Path, record: dict[str, Any]) -> None:
    if not distributed.is_main():  # rank 0 writes metrics.jsonl
        return
    with path.open("a", encoding="utf-8") as handle:
        handle.write(_json_line(record) + "\n")


def _json_line(record: dict[str, Any]) -> str:
    """A ``metrics.jsonl`` line in strict JSON: a NaN or infinite number (a loss when every
    batch of the interval was skipped, a perplexity that overflowed) is written as null."""
    return json.dumps(_finite(record), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def drop_records_after(path: Path, step: int) -> None:
    """On resume, forget evaluations logged after the checkpoint we continue from."""
    if not path.exists():
        return
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # blank, or cut short by a kill or a full disk
            continue
    kept = [_json_line(r) for r in records if r.get("split") != "test" and (r.get("step") or 0) <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
