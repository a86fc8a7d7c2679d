"""The rules that tie a recipe's keys together, checked after its types (``config.load_recipe``).

Three kinds, in the order ``check_consistency`` runs them:

- ``TASK_KEYS``: keys that only some tasks use; any other task must leave them at their
  default. One row per key: the tasks that use it, its default, and the message when
  another task sets it (by default "only TASK uses it; remove it or set DEFAULT").
- ``TASK_RULES``: one small function per task, for the rules of that task alone.
- ``SHARED_RULES``: rules that cut across tasks (starting from a checkpoint and freezing,
  word vectors, vector inputs, held-out examples, adaptive softmax cutoffs, the training
  files, the end of training, the device and precision, the metric that picks ``best/``).

Each rule returns its problems as ``(key path, message)``. This module imports neither
torch nor the tasks package: the CLI checks recipes before importing either.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

if TYPE_CHECKING:
    from .config import Recipe

Problems = list[tuple[tuple[str, ...], str]]
TASKS: tuple[str, ...] = ("language_model", "tagging", "classification", "regression", "generation", "seq2seq")
MANY_TO_ONE = ("classification", "regression")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def as_written(value: Any) -> str:
    """A recipe value as YAML spells it (``true``, ``null``), a string or number as Python's repr."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value)


class TaskKey(NamedTuple):
    """A key only ``tasks`` use; the others must leave it at ``default``."""

    path: tuple[str, ...]
    tasks: tuple[str, ...]
    default: Any
    message: Optional[str] = None  # None: "only TASK (and TASK) uses it; remove it or set DEFAULT"

    def problem(self) -> str:
        if self.message is not None:
            return self.message
        users = " and ".join(task for task in TASKS if task in self.tasks)
        verb = "use" if len(self.tasks) > 1 else "uses"
        return f"only {users} {verb} it; remove it or set {as_written(self.default)}"


TASK_KEYS: tuple[TaskKey, ...] = (
    TaskKey(("model", "tie_weights"), ("language_model", "generation"), False,  # seq2seq: two vocabularies
            "only a language model or a generator ties its output layer to the embedding"),
    TaskKey(("model", "output"), ("language_model",), "softmax", "only a language model has an adaptive softmax; remove it or set 'softmax'"),
    TaskKey(("model", "crf"), ("tagging",), False),
    TaskKey(("model", "char_features"), ("tagging",), "none"),
    TaskKey(("model", "pooling"), MANY_TO_ONE, "last"),
    TaskKey(("data", "inputs"), MANY_TO_ONE, "text"),
    TaskKey(("data", "max_length"), MANY_TO_ONE, None),
    TaskKey(("model", "input_size"), MANY_TO_ONE, None),
    TaskKey(("data", "holdout"), ("classification", "regression", "generation", "seq2seq"), None,
            "only classification, regression, generation and seq2seq hold examples out; give data.valid a file"),
    TaskKey(("data", "condition_field"), ("generation",), None),
    TaskKey(("model", "condition"), ("generation",), "both"),
    TaskKey(("model", "condition_dim"), ("generation",), 16),
    TaskKey(("model", "attention"), ("seq2seq",), "luong"),
    TaskKey(("model", "input_feeding"), ("seq2seq",), True),
    TaskKey(("train", "teacher_forcing"), ("seq2seq",), 1.0),
    TaskKey(("train", "teacher_forcing_end"), ("seq2seq",), None),
    TaskKey(("train", "label_smoothing"), ("seq2seq",), 0.0),
    TaskKey(("target_tokenizer",), ("seq2seq",), None, "only seq2seq has a target tokenizer; remove it"),
    TaskKey(("train", "class_weights"), ("tagging", "classification"), None, "only tagging and classification weigh classes; remove it"),
    TaskKey(("train", "loss"), ("regression",), "mse", "only regression chooses its loss; remove it"),
    # AWD-LSTM's regularisers (seqkit/regularize.py)
    TaskKey(("model", "locked_dropout"), ("language_model", "generation"), False),
    TaskKey(("model", "output_dropout"), ("language_model", "tagging", "classification", "regression", "generation"), None,
            "seq2seq's decoder reads model.dropout; remove it"),
    TaskKey(("train", "ar_alpha"), ("language_model",), 0.0),
    TaskKey(("train", "tar_beta"), ("language_model",), 0.0),
    TaskKey(("train", "variable_bptt"), ("language_model",), False, "only a language model reads chunks of train.bptt tokens; remove it"),
)  # fmt: skip


# --- the validation metric that picks best/ (train.select_on) -----------------------------

# what each task's evaluate reports that can pick best/, its own choice (train.select_on: auto) first
_METRICS: dict[str, tuple[str, ...]] = {
    "language_model": ("perplexity", "loss", "perplexity_no_unk"),
    "entity_tagging": ("f1", "precision", "recall", "accuracy"),  # data.scheme bio or bioes: entities (micro), token accuracy
    "plain_tagging": ("accuracy", "macro_f1", "macro_f1_except_o", "unseen_accuracy"),  # data.scheme none (metrics.tag_scores)
    "classification": ("macro_f1", "accuracy", "loss"),
    "regression": ("mae", "rmse", "loss"),
    "generation": ("perplexity", "loss"),
    "seq2seq": ("wer", "per", "loss", "perplexity"),
}
LOWER_IS_BETTER = frozenset({"loss", "perplexity", "perplexity_no_unk", "mae", "rmse", "per", "wer"})


def selectable_metrics(recipe: Recipe) -> tuple[str, ...]:
    """The validation metrics ``train.select_on`` may name for this recipe's task, the one
    ``auto`` picks first (a tagger's depend on ``data.scheme``: plain tags have no entities)."""
    if recipe.task == "tagging":
        return _METRICS["plain_tagging" if recipe.data.scheme == "none" else "entity_tagging"]
    return _METRICS[recipe.task]


def selected_metric(recipe: Recipe) -> tuple[str, bool]:
    """``(metric, higher_is_better)``: what picks ``best/`` and drives early stopping and the
    plateau schedule. Loss, perplexity, MAE, RMSE, PER and WER are better lower; accuracy,
    F1, precision and recall higher."""
    name = recipe.train.select_on
    if name == "auto":
        name = selectable_metrics(recipe)[0]
    return name, name not in LOWER_IS_BETTER


def _value(recipe: Recipe, path: tuple[str, ...]) -> Any:
    value: Any = recipe
    for part in path:
        value = getattr(value, part)
    return value


def _task_keys(recipe: Recipe) -> Problems:
    """``TASK_KEYS`` set away from their defaults by a task that does not use them."""
    return [(key.path, key.problem()) for key in TASK_KEYS if recipe.task not in key.tasks and _value(recipe, key.path) != key.default]


# --- each task's own rules ---------------------------------------------------------------


def _language_model(recipe: Recipe) -> Problems:
    if recipe.model.bidirectional:
        return [(("model", "bidirectional"), "a language model predicts the next token, so its encoder must read left to right; set it to false")]
    return []


def _tagging(recipe: Recipe) -> Problems:
    problems = []
    if recipe.data.scheme == "none" and recipe.model.tag_scheme is not None:
        problems.append((("model", "tag_scheme"), "plain tags (data.scheme: none) form no entities to rewrite in bio or bioes; set it to null"))
    if recipe.tokenizer.kind != "word" and recipe.tokenizer.path is None:
        problems.append((("tokenizer", "kind"), "tagging gives one tag per word: use the word tokenizer"))
    if recipe.train.class_weights is not None and recipe.model.crf:
        problems.append((("train", "class_weights"), "a CRF scores whole tag sequences, not each word's tag: weigh tags with the softmax head (model.crf: false)"))
    return problems


def _classification(recipe: Recipe) -> Problems:
    if recipe.model.pooling == "none":
        return [(("model", "pooling"), "a classifier gives one label per input: use last, mean, max or attention (a label per token is task: tagging)")]
    return []


def _regression(recipe: Recipe) -> Problems:
    if recipe.model.pooling == "none" and recipe.data.inputs != "vectors":
        return [(("model", "pooling"), "an output at every step needs vector inputs (data.inputs: vectors), one target per step")]
    return []


def _generation(recipe: Recipe) -> Problems:
    if recipe.model.bidirectional:
        return [(("model", "bidirectional"), "a generator writes left to right, so its decoder must read that way; set it to false")]
    return []


def _seq2seq(recipe: Recipe) -> Problems:
    """Its own keys (attention, teacher forcing, the target tokenizer) are in ``TASK_KEYS``;
    no rule ties them further."""
    return []


TASK_RULES: dict[str, Callable[[Recipe], Problems]] = {
    "language_model": _language_model,
    "tagging": _tagging,
    "classification": _classification,
    "regression": _regression,
    "generation": _generation,
    "seq2seq": _seq2seq,
}


# --- rules across tasks ------------------------------------------------------------------


def _adaptive_cutoffs(recipe: Recipe) -> Problems:
    model, problems = recipe.model, []
    if model.adaptive_cutoffs is not None and model.output != "adaptive":
        problems.append((("model", "adaptive_cutoffs"), "cut the vocabulary for model.output: adaptive; set that too, or remove this"))
    if model.adaptive_cutoffs is not None and (not model.adaptive_cutoffs or model.adaptive_cutoffs != sorted(set(model.adaptive_cutoffs))):
        problems.append((("model", "adaptive_cutoffs"), "token ids that strictly increase, e.g. [64, 256, 1024, 4096]: the shortlist ends at the first"))
    return problems


def _training_files(recipe: Recipe) -> Problems:
    problems = []
    if isinstance(recipe.data.train, list) and recipe.task != "language_model":
        problems.append((("data", "train"), "only a language model reads several training files; give one path"))
    if isinstance(recipe.data.train, list) and not recipe.data.train:
        problems.append((("data", "train"), "an empty list: give one or more files"))
    return problems


def _streaming(recipe: Recipe) -> Problems:
    from .config import splits_at_newline_byte  # config imports this module

    data = recipe.data
    if data.streaming is True and recipe.task != "language_model":
        return [(("data", "streaming"), "only a language model streams its training text; remove it")]
    if data.streaming is True and not splits_at_newline_byte(data.encoding):
        return [(("data", "streaming"), (f"streamed text is cut into lines at the byte 0x0A, which is not a newline in {data.encoding} "
                                          f"(data.encoding): set data.streaming to false, or convert the files to UTF-8"))]  # fmt: skip
    return []


def _class_weight_values(recipe: Recipe) -> Problems:
    weights = recipe.train.class_weights
    if isinstance(weights, dict) and any(weight <= 0 for weight in weights.values()):
        return [(("train", "class_weights"), "weights must be positive")]
    return []


def _transfer(recipe: Recipe) -> Problems:
    """``model.init_from`` and what only it gives meaning to: freezing, the vocabulary match."""
    model, train, problems = recipe.model, recipe.train, []
    if model.init_from is None and (train.freeze_pretrained or train.unfreeze != "all"):
        problems.append((("train", "freeze_pretrained" if train.freeze_pretrained else "unfreeze"), "freezing applies to tensors loaded by model.init_from: set it"))
    if model.init_from is not None and model.init_vocabulary == "source" and recipe.tokenizer.path is not None:
        problems.append((("tokenizer", "path"), "model.init_from reuses its checkpoint's tokenizer: remove tokenizer.path, or set model.init_vocabulary: task"))
    if model.init_from is None and model.init_vocabulary != "source":
        problems.append((("model", "init_vocabulary"), "matches this task's words to the rows of model.init_from: set it"))
    if model.init_from is not None and recipe.data.inputs == "vectors":
        problems.append((("model", "init_from"), "vector inputs have no embedding to start from: remove it"))
    return problems


def _embeddings(recipe: Recipe) -> Problems:
    embeddings, problems = recipe.model.embeddings, []
    if embeddings.freeze and embeddings.pretrained is None:
        problems.append((("model", "embeddings", "freeze"), "freezes pretrained vectors: set model.embeddings.pretrained too"))
    if embeddings.pretrained is not None and recipe.data.inputs == "vectors":
        problems.append((("model", "embeddings", "pretrained"), "vector inputs have no embedding to fill"))
    return problems


def _vector_inputs(recipe: Recipe) -> Problems:
    inputs, input_size = recipe.data.inputs, recipe.model.input_size
    if inputs == "vectors" and input_size is None:
        return [(("model", "input_size"), "data.inputs is vectors: set the number of values per step")]
    if inputs == "text" and input_size is not None:
        return [(("model", "input_size"), "only vector inputs have an input size (text goes through the embedding): remove it")]
    return []


def _holdout(recipe: Recipe) -> Problems:
    data, holdout, problems = recipe.data, recipe.data.holdout, []
    if holdout is None:
        return problems
    if data.valid is not None and holdout.valid > 0:
        problems.append((("data", "holdout", "valid"), "data.valid names a file; set this to 0 or data.valid to null"))
    if data.valid is None and holdout.valid == 0:
        problems.append((("data", "holdout", "valid"), "data.valid is null, so validation examples must be held out: set a share above 0"))
    if data.test is not None and holdout.test > 0:
        problems.append((("data", "holdout", "test"), "data.test names a file; set this to 0 or data.test to null"))
    if holdout.valid + holdout.test >= 0.9:
        problems.append((("data", "holdout"), "valid + test would leave too little to train on"))
    return problems


def _regularisers(recipe: Recipe) -> Problems:
    """Embedding dropout needs an embedding, dropout between layers several layers, the
    averaging keys their ``train.average``, variable BPTT a text read whole."""
    model, train, problems = recipe.model, recipe.train, []
    if model.embedding_dropout > 0 and recipe.data.inputs == "vectors":
        problems.append((("model", "embedding_dropout"), "vector inputs have no embedding to drop words from; set it to 0"))
    if model.layer_dropout is not None and model.num_layers == 1 and model.layer_dropout > 0:
        problems.append((("model", "layer_dropout"), "one layer has nothing between layers to drop; set model.num_layers above 1 or remove it"))
    if train.average == "none" and train.average_start:
        problems.append((("train", "average_start"), "starts train.average, which is none: set it to uniform or ema, or remove this"))
    if train.average != "ema" and train.average_decay != 0.999:
        problems.append((("train", "average_decay"), "is the decay of train.average: ema; set that too, or remove this"))
    if train.variable_bptt and recipe.data.streaming is True:
        problems.append((("train", "variable_bptt"), "streamed text (data.streaming: true) is read in chunks of train.bptt tokens; set data.streaming: false or remove this"))
    return problems


def _training_end(recipe: Recipe) -> Problems:
    if recipe.train.epochs is None and recipe.train.max_steps is None:
        return [(("train", "epochs"), "set train.epochs or train.max_steps (or both): training needs an end")]
    return []


def _device_and_precision(recipe: Recipe) -> Problems:
    train = recipe.train
    if not DEVICE_PATTERN.match(train.device):
        return [(("train", "device"), f"unknown device {train.device!r}: use auto, cpu, cuda, cuda:N or mps")]
    if train.precision == "fp16" and train.device in ("cpu", "mps"):
        return [(("train", "precision"), "fp16 needs CUDA (it trains with a gradient scaler); use auto (bf16 where the CPU runs it natively, else fp32)")]
    return []


def _select_on(recipe: Recipe) -> Problems:
    name, allowed = recipe.train.select_on, selectable_metrics(recipe)
    if name == "auto" or name in allowed:
        return []
    what = f"{recipe.task} (data.scheme: {recipe.data.scheme})" if recipe.task == "tagging" else recipe.task
    return [(("train", "select_on"), f"{name!r} is not a validation metric {what} reports; use auto ({allowed[0]}) or one of: {', '.join(allowed)}")]


SHARED_RULES: tuple[Callable[[Recipe], Problems], ...] = (
    _adaptive_cutoffs,
    _training_files,
    _streaming,
    _class_weight_values,
    _transfer,
    _embeddings,
    _vector_inputs,
    _holdout,
    _regularisers,
    _training_end,
    _device_and_precision,
    _select_on,
)


def check_consistency(recipe: Recipe) -> Problems:
    """Rules that tie several keys together; each problem is (key path, message)."""
    problems = _task_keys(recipe)
    problems += TASK_RULES[recipe.task](recipe)
    for rule in SHARED_RULES:
        problems += rule(recipe)
    return problems
