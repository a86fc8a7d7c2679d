"""Metrics computed from accumulated sums (pure functions, no model code)."""

from __future__ import annotations

import math


def perplexity(total_nll: float, num_tokens: int) -> float:
    """``exp`` of the mean negative log-likelihood per token (natural log); ``inf`` on overflow."""
    if num_tokens == 0:
        return float("nan")
    mean = total_nll / num_tokens
    return math.exp(mean) if mean < 700 else float("inf")
