"""Metrics computed from accumulated sums (pure functions, no model code)."""

from __future__ import annotations

import math
from typing import Any

from .labels import spans


def perplexity(total_nll: float, num_tokens: int) -> float:
    """``exp`` of the mean negative log-likelihood per token (natural log); ``inf`` on overflow."""
    if num_tokens == 0:
        return float("nan")
    mean = total_nll / num_tokens
    return math.exp(mean) if mean < 700 else float("inf")


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, Any]:
    """Entity-level precision, recall and F1 (micro), and per entity type.

    An entity counts as found only when its type and both its boundaries match exactly,
    as in CoNLL's ``conlleval`` (and seqeval's default mode); spans are read from the
    tags with ``labels.spans``.

    Returns:
        ``precision``, ``recall``, ``f1``, ``entities`` (gold count) and ``per_type``:
        ``{type: {precision, recall, f1, entities}}``.
    """
    counts: dict[str, list[int]] = {}  # type -> [true positives, predicted, gold]
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_spans, predicted_spans = set(spans(gold_tags)), set(spans(predicted_tags))
        for span in gold_spans | predicted_spans:
            entry = counts.setdefault(span[2], [0, 0, 0])
            entry[0] += span in gold_spans and span in predicted_spans
            entry[1] += span in predicted_spans
            entry[2] += span in gold_spans
    totals = [sum(entry[i] for entry in counts.values()) for i in range(3)]
    return {**_precision_recall_f1(*totals), "per_type": {label: _precision_recall_f1(*counts[label]) for label in sorted(counts)}}


def _precision_recall_f1(true_positives: int, predicted: int, gold: int) -> dict[str, Any]:
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "entities": gold}
