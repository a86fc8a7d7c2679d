"""Write ``random.jsonl``: the founding tutorial's random data, 2 sequences of 3 steps.

Each step has 10 inputs and 2 targets, drawn from a standard normal distribution with
``torch.manual_seed(0)``: inputs first, as ``torch.randn(2, 3, 10)``, then targets, as
``torch.randn(2, 3, 2)``. Run from the repository root::

    python data/seed/make.py
"""

import json
from pathlib import Path

import torch

torch.manual_seed(0)
inputs = torch.randn(2, 3, 10)
targets = torch.randn(2, 3, 2)
with (Path(__file__).parent / "random.jsonl").open("w", encoding="utf-8") as handle:
    for sequence, target in zip(inputs.tolist(), targets.tolist()):
        handle.write(json.dumps({"inputs": sequence, "targets": target}) + "\n")
