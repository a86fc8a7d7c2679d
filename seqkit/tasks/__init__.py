"""What differs between tasks, in one small class per task: its data, the loss of a batch
and its evaluation. The training loop (``train.py``) is the same for all of them.

A task class has: ``name``; ``metric`` and ``higher_is_better`` (what picks ``best/``
and drives early stopping unless ``train.select_on`` names another of its numbers: the
names each task reports are listed in ``recipe_rules.selectable_metrics``); ``make_tokenizer(recipe)``; ``__init__(recipe, tokenizer,
labels)``; ``labels``; ``summary()``; ``train_batches(epoch, device)`` (a pure function
of the seed and epoch, so that ``--resume`` is exact); ``steps_per_epoch()``;
``loss(model, batch, carry)``; ``evaluate(model, precision, split)``; ``describe(metrics)``;
``sample(model)``; and, where the loss of a batch is a mean over something other than the
``num_targets`` that ``loss`` returns, ``loss_weight(batch)``: what it is a mean over (DDP
weighs each process's loss by it, see ``distributed.py``).

``TASKS`` is a literal table from a recipe's ``task`` name to its class.
"""

from __future__ import annotations

from .generation import GenerationTask, generate_texts
from .language_model import LanguageModelTask, evaluate_language_model, evaluate_language_model_file
from .seq2seq import Seq2SeqTask, translate_ids
from .sequence import ClassificationTask, RegressionTask, encode_inputs, predict_outputs
from .tagging import TaggingTask, evaluate_tagger, predict_tags, score_tags

TASKS: dict[str, type] = {
    "language_model": LanguageModelTask,
    "tagging": TaggingTask,
    "classification": ClassificationTask,
    "regression": RegressionTask,
    "generation": GenerationTask,
    "seq2seq": Seq2SeqTask,
}

__all__ = [
    "TASKS", "LanguageModelTask", "TaggingTask", "ClassificationTask", "RegressionTask", "evaluate_language_model",
    "evaluate_language_model_file", "evaluate_tagger", "predict_tags", "score_tags", "encode_inputs", "predict_outputs",
    "GenerationTask", "generate_texts", "Seq2SeqTask", "translate_ids",
]  # fmt: skip
