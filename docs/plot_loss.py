"""Plot the training loss of one or more seqkit runs from their ``metrics.jsonl``.

    python docs/plot_loss.py runs/seed runs/seed-2000 --out docs/seed-loss.png

Reads the ``"split": "train"`` records (one per ``train.log_every`` steps) and draws the
loss against the step on a log scale, one line per run. Needs matplotlib
(``pip install matplotlib``), which seqkit itself does not depend on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def train_losses(run_dir: Path) -> tuple[list[int], list[float]]:
    """Steps and training losses logged in a run's metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    logged = [record for record in records if record.get("split") == "train"]
    if not logged:
        raise SystemExit(f"{run_dir / 'metrics.jsonl'}: no training records (set train.log_every)")
    return [record["step"] for record in logged], [record["loss"] for record in logged]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each holds metrics.jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="Training loss (MSE) of the tutorial's RNN")
    args = parser.parse_args()

    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    runs = sorted(((run_dir, *train_losses(run_dir)) for run_dir in args.runs), key=lambda run: -len(run[1]))
    for order, (run_dir, steps, losses) in enumerate(runs):  # the longest first, shorter ones drawn over it
        axes.plot(steps, losses, label=f"{run_dir.name}: {steps[-1]:,} steps, final loss {losses[-1]:.2g}",
                  linewidth=1.5 + 2.5 * order, alpha=0.85, zorder=order)  # fmt: skip
    axes.set_yscale("log")
    axes.set_xlabel("step (= epoch: one batch of 2 sequences)")
    axes.set_ylabel("training loss")
    axes.set_title(args.title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
