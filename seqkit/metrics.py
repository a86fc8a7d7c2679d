"""Metrics computed from accumulated sums (pure functions, no model code)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .labels import spans


def perplexity(total_nll: float, num_tokens: int) -> float:
    """``exp`` of the mean negative log-likelihood per token (natural log); ``inf`` on overflow."""
    if num_tokens == 0:
        return float("nan")
    mean = total_nll / num_tokens
    return math.exp(mean) if mean < 700 else float("inf")


def entity_scores(gold: list[list[str]], predicted: list[list[str]], scheme: str = "bio") -> dict[str, Any]:
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
        gold_spans, predicted_spans = set(spans(gold_tags, scheme)), set(spans(predicted_tags, scheme))
        for span in gold_spans | predicted_spans:
            entry = counts.setdefault(span[2], [0, 0, 0])
            entry[0] += span in gold_spans and span in predicted_spans
            entry[1] += span in predicted_spans
            entry[2] += span in gold_spans
    totals = [sum(entry[i] for entry in counts.values()) for i in range(3)]
    return {**_precision_recall_f1(*totals), "per_type": {label: _precision_recall_f1(*counts[label]) for label in sorted(counts)}}


def tag_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], unseen: Sequence[Sequence[bool]]) -> dict[str, Any]:
    """Token accuracy, accuracy on the words marked ``unseen``, and per-tag precision, recall
    and F1 (a token is a true positive of its tag when the prediction matches).

    Args:
        gold, predicted: each sentence's tags (the same lengths).
        unseen: per token, whether the word is outside the model's vocabulary.

    Returns:
        ``accuracy``, ``tokens``, ``unseen_accuracy`` (0 when no word is unseen),
        ``unseen_tokens``, ``macro_f1`` (the unweighted mean of the per-tag F1 over every
        tag in gold or predicted), ``macro_f1_except_o`` (the same mean with the tag ``O``
        left out: over the marks of punctuation restoration, say, whose O is most words;
        0 when no other tag occurs; ``macro_f1`` itself where there is no ``O``) and
        ``per_tag``: ``{tag: {precision, recall, f1, tokens}}`` (``tokens``: the gold count),
        by tag name.
    """
    counts: dict[str, list[int]] = {}  # tag -> [true positives, predicted, gold]
    correct = tokens = unseen_correct = unseen_tokens = 0
    for gold_tags, predicted_tags, unseen_words in zip(gold, predicted, unseen, strict=True):
        for truth, guess, new in zip(gold_tags, predicted_tags, unseen_words, strict=True):
            counts.setdefault(guess, [0, 0, 0])[1] += 1
            entry = counts.setdefault(truth, [0, 0, 0])
            entry[2] += 1
            entry[0] += truth == guess
            correct, tokens = correct + (truth == guess), tokens + 1
            unseen_correct, unseen_tokens = unseen_correct + (new and truth == guess), unseen_tokens + new
    per_tag = {}
    for tag in sorted(counts):
        scores = _precision_recall_f1(*counts[tag])
        scores["tokens"] = scores.pop("entities")
        per_tag[tag] = scores
    except_o = [scores["f1"] for tag, scores in per_tag.items() if tag != "O"]
    return {
        "accuracy": correct / tokens if tokens else 0.0,
        "tokens": tokens,
        "unseen_accuracy": unseen_correct / unseen_tokens if unseen_tokens else 0.0,
        "unseen_tokens": unseen_tokens,
        "macro_f1": sum(scores["f1"] for scores in per_tag.values()) / len(per_tag) if per_tag else 0.0,
        "macro_f1_except_o": sum(except_o) / len(except_o) if except_o else 0.0,
        "per_tag": per_tag,
    }


def _precision_recall_f1(true_positives: int, predicted: int, gold: int) -> dict[str, Any]:
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "entities": gold}


def classification_scores(gold: Sequence[int], predicted: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-averaged F1 and per-class precision, recall and F1.

    Macro-F1 is the unweighted mean of the per-class F1 over every class of ``classes``
    (a class never predicted and never present scores 0), as scikit-learn's
    ``f1_score(average="macro", labels=all classes, zero_division=0)`` computes it.

    Returns:
        ``accuracy``, ``macro_f1``, ``examples`` and ``per_class``:
        ``{class: {precision, recall, f1, examples}}`` (``examples``: the gold count).
    """
    counts = [[0, 0, 0] for _ in classes]  # true positives, predicted, gold
    for truth, guess in zip(gold, predicted, strict=True):
        counts[guess][1] += 1
        counts[truth][2] += 1
        counts[truth][0] += truth == guess
    per_class = {}
    for name, (true_positives, num_predicted, num_gold) in zip(classes, counts):
        scores = _precision_recall_f1(true_positives, num_predicted, num_gold)
        scores["examples"] = scores.pop("entities")
        per_class[name] = scores
    total = len(gold)
    return {
        "accuracy": sum(entry[0] for entry in counts) / total if total else 0.0,
        "macro_f1": sum(scores["f1"] for scores in per_class.values()) / len(classes) if classes else 0.0,
        "examples": total,
        "per_class": per_class,
    }


def regression_scores(gold: np.ndarray, predicted: np.ndarray, baseline: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Mean absolute error and root mean squared error, and the same for a constant
    ``baseline`` prediction (the training mean), over all outputs; per output too when
    there are several.

    Args:
        gold, predicted: (n, outputs) values in the data's units (per-step outputs flattened).
        baseline: (outputs,) the constant prediction to compare with.
        names: the outputs' names.
    """

    def errors(difference: np.ndarray) -> tuple[float, float]:
        return float(np.abs(difference).mean()), float(np.sqrt((difference**2).mean()))

    mae, rmse = errors(predicted - gold)
    baseline_mae, baseline_rmse = errors(baseline[None, :] - gold)
    scores: dict[str, Any] = {"mae": mae, "rmse": rmse, "baseline_mae": baseline_mae, "baseline_rmse": baseline_rmse}
    if len(names) > 1:
        scores["per_output"] = {
            name: dict(zip(("mae", "rmse"), errors(predicted[:, i] - gold[:, i]))) for i, name in enumerate(names)
        }
    return scores


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (insertions, deletions and
    substitutions each cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, expected in enumerate(reference, start=1):
        current = [i]
        for j, found in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (expected != found)))
        previous = current
    return previous[-1]


def sequence_error_rates(references: Sequence[Sequence[Sequence[str]]], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Token error rate -- the edit distance summed over all sequences, divided by the
    reference tokens (for grapheme-to-phoneme: the phoneme error rate, PER) -- and the
    sequence error rate: the share of outputs that are not exactly right (WER, a "word"
    being one whole output).

    ``references[i]`` holds every acceptable output for item ``i`` (one or more: CMUdict
    lists alternative pronunciations for some words). An output is right when it equals
    any of them, and its token errors count against the closest one, as published G2P
    results are scored."""
    errors = tokens = wrong = 0
    for options, output in zip(references, predicted, strict=True):
        output = list(output)
        distance, length = min((edit_distance(option, output), len(option)) for option in options)
        errors, tokens, wrong = errors + distance, tokens + length, wrong + (distance > 0)
    return {"per": errors / max(tokens, 1), "wer": wrong / max(len(references), 1), "sequences": len(references)}


def group_references(sources: Sequence[str], targets: Sequence[Any]) -> tuple[list[str], list[list[Any]]]:
    """Collect the targets of repeated sources: ``(unique sources in first-seen order,
    their targets)``, so that a pairs file listing a word twice scores either output as right."""
    grouped: dict[str, list[Any]] = {}
    for source, target in zip(sources, targets, strict=True):
        grouped.setdefault(source, []).append(target)
    return list(grouped), list(grouped.values())
