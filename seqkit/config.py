"""The recipe: YAML in, a typed and validated ``Recipe`` out, every default visible.

``load_recipe`` is the one entry point. It reads the YAML, applies ``--set`` overrides,
validates types with pydantic and then the rules that tie keys together (``recipe_rules``),
and reports *every* problem at once, one line each, naming the file, line and key::

    recipes/lm.yaml:14: model.hiden_size: unknown key (did you mean model.hidden_size?)
    --set train.epochs=three: train.epochs: Input should be a valid integer

Sections and key names follow DESIGN.md. Each key has exactly one home: the code that
acts on it reads it from the ``Recipe`` and passes plain values on.
"""

from __future__ import annotations

import codecs
import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .errors import RecipeError
from .recipe_rules import MANY_TO_ONE, TASKS, as_written, check_consistency  # noqa: F401 (MANY_TO_ONE: still importable from here)

Task = Literal["language_model", "tagging", "classification", "regression", "generation", "seq2seq"]  # TASKS, as a type
_SECTIONS = ("data", "tokenizer", "model", "train", "generate")  # an empty one (all keys commented out) means its defaults
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|(list|dict|tuple|literal|function-\w+)\[.*\])$")  # pydantic's tags in a loc
# YAML constructs that open and must close (PyYAML's context for them): a syntax error inside one is most often that it does not
_OPENED = {"while parsing a flow sequence": "the flow sequence", "while parsing a flow mapping": "the flow mapping",
           "while scanning a quoted scalar": "the quoted string"}  # fmt: skip


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic would read `hidden_size: true` as 1
        if isinstance(value, bool) and bool not in _types(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number or a name, not a boolean")
        return value


def _types(annotation: Any) -> set:
    """Every type an annotation admits, through Optional, Union and Literal."""
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return {type(argument) for argument in arguments}
    if typing.get_origin(annotation) is Union:
        return set().union(*(_types(argument) for argument in arguments))
    return {annotation}


class HoldoutConfig(_Section):
    """Validation and test examples held out of the training file, by a stable hash of a
    field, so the same examples are held out whatever the seed and file order."""

    by: Optional[str] = None  # the field whose value decides (examples sharing it stay together); null: the input itself
    valid: float = Field(0.1, ge=0.0, lt=1.0)  # share of the examples (of the groups) for validation
    test: float = Field(0.0, ge=0.0, lt=1.0)


class DataConfig(_Section):
    """Where the examples come from. Paths are relative to the working directory."""

    train: Union[None, str, list[str]] = None  # language_model: may be a list of files
    valid: Optional[str] = None
    test: Optional[str] = None
    # tagging: CoNLL columns (0-based; negative counts from the end) and the tags' scheme
    token_column: int = 0
    tag_column: int = -1
    scheme: Literal["bio", "bioes", "none"] = "bio"  # none: plain tags (parts of speech, ...): any string is a tag, no spans
    # classification / regression: JSON Lines (.jsonl, .jsonl.gz) or, for vectors, .npz
    inputs: Literal["text", "vectors"] = "text"  # vectors: each step a list of numbers, no tokenizer
    input_field: str = "text"
    target_field: Union[str, list[str]] = "label"  # regression: one field per output, or one field holding a list
    holdout: Optional[HoldoutConfig] = None  # take valid (and test) from train when their files are null
    max_length: Optional[int] = Field(None, ge=1)  # tokens (steps) per input; longer inputs are truncated
    truncation: Literal["head", "tail", "head+tail"] = "head"  # which tokens a truncated input keeps
    normalize_targets: bool = True  # regression: train on standardized targets (predictions come back in data units)
    condition_field: Optional[str] = None  # generation: the field naming each text's condition (null: unconditioned)
    streaming: Union[bool, Literal["auto"]] = "auto"  # language model: read the training text from its files as training goes, never whole (auto: above 1 GiB)
    encoding: str = "utf-8"  # of every text file above (a Python codec name: latin-1, cp1252, utf-16, ...); utf-8 and utf-16 drop a byte order mark
    # seq2seq reads pairs: tab-separated SOURCE<TAB>TARGET lines (.tsv, .tsv.gz), or JSON Lines with input_field and target_field

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, value: str) -> str:
        if not is_text_encoding(value):
            raise ValueError("not a text encoding Python knows (a codec name such as utf-8, latin-1, cp1252 or utf-16)")
        return value


class TokenizerConfig(_Section):
    """How text becomes token ids (Hugging Face ``tokenizers``)."""

    kind: Literal["word", "bpe", "char"] = "word"
    path: Optional[str] = None  # an existing tokenizer.json: used as is, not trained
    split: Literal["punctuation", "tweet", "whitespace"] = "punctuation"  # word: how raw text splits into words
    lowercase: bool = False
    min_frequency: int = Field(1, ge=1)
    vocab_size: Optional[int] = Field(None, ge=8)  # null: word/char keep all, bpe 8000
    sample_mb: float = Field(100.0, gt=0.0)  # data.streaming: trained on at most this many MB of the training text, 64 evenly spaced pieces


class EmbeddingsConfig(_Section):
    """Where the word vectors start from."""

    pretrained: Optional[str] = None  # a word2vec / GloVe text file (header line optional); null: random
    freeze: bool = False  # keep the pretrained vectors fixed during training


class ModelConfig(_Section):
    """Embedding -> RNN/GRU/LSTM encoder -> task head."""

    embedding_dim: int = Field(128, ge=1)
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    init_from: Optional[str] = None  # a checkpoint (dir, archive, URL) whose embedding + encoder start this model
    init_vocabulary: Literal["source", "task"] = "source"  # init_from: reuse its tokenizer, or train this task's own and copy the rows of the words both know
    encoder: Literal["rnn", "gru", "lstm"] = "lstm"
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    hidden_size: int = Field(256, ge=1)
    num_layers: int = Field(2, ge=1)
    bidirectional: bool = False
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    input_dropout: Optional[float] = Field(None, ge=0.0, lt=1.0)  # on the embeddings (null: dropout)
    layer_dropout: Optional[float] = Field(None, ge=0.0, lt=1.0)  # between stacked layers (null: dropout)
    output_dropout: Optional[float] = Field(None, ge=0.0, lt=1.0)  # on the encoder's outputs, before the head (null: dropout)
    locked_dropout: bool = False  # language model, generation: those three keep one mask per sequence over time (variational)
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # drop whole words (embedding rows) in training
    weight_drop: float = Field(0.0, ge=0.0, lt=1.0)  # DropConnect on the recurrent hidden-to-hidden weights in training
    tie_weights: bool = False  # language model
    output: Literal["softmax", "adaptive"] = "softmax"  # language model: a full softmax, or an adaptive one (exact, cheaper for large vocabularies)
    adaptive_cutoffs: Optional[list[Annotated[int, Field(ge=1)]]] = None  # output: adaptive: token ids where the shortlist and each cluster end (null: 64, 256, 1024, ...)
    crf: bool = False  # tagging: a CRF over the tag sequence instead of a softmax per token
    char_features: Literal["none", "lstm", "cnn"] = "none"  # tagging: word vectors from characters too
    char_embedding_dim: int = Field(25, ge=1)
    char_hidden_size: int = Field(25, ge=1)  # per direction (lstm) or filters (cnn)
    tag_scheme: Optional[Literal["bio", "bioes"]] = None  # tagging: what the model predicts (null: data.scheme)
    pooling: Literal["last", "mean", "max", "attention", "none"] = "last"  # classification / regression; none: an output per step
    input_size: Optional[int] = Field(None, ge=1)  # data.inputs: vectors: numbers per step (replaces the embedding)
    condition: Literal["state", "input", "both"] = "both"  # generation: the condition sets the initial state, is an input at every step, or both
    condition_dim: int = Field(16, ge=1)  # generation: size of each condition's vector
    attention: Literal["luong", "bahdanau"] = "luong"  # seq2seq: how the decoder scores the encoder's states
    input_feeding: bool = True  # seq2seq: feed each step's attentional vector into the next; false: teacher-forced training runs every step at once


class TrainConfig(_Section):
    """The optimisation loop: what ``train.py`` reads."""

    epochs: Optional[int] = Field(3, ge=1)
    max_steps: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    bptt: int = Field(35, ge=1)  # language model: tokens per truncated-BPTT chunk
    variable_bptt: bool = False  # language model: each chunk's length drawn around bptt (AWD-LSTM), its lr scaled by length / bptt
    ar_alpha: float = Field(0.0, ge=0.0, allow_inf_nan=False)  # language model: activation regularisation, alpha * mean(h^2) of the dropped outputs
    tar_beta: float = Field(0.0, ge=0.0, allow_inf_nan=False)  # language model: temporal AR, beta * mean((h_t - h_{t-1})^2) before dropout
    eval_batch_size: int = Field(10, ge=1)
    lr: float = Field(0.003, gt=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(0.0, ge=0.0, lt=1.0)  # sgd only
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: Optional[float] = Field(1.0, gt=0.0)
    schedule: Literal["none", "plateau", "cosine"] = "none"
    warmup_steps: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0.0)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    plateau_patience: int = Field(0, ge=0)
    eval_every: Optional[int] = Field(None, ge=1)  # steps; null: after every epoch
    early_stopping: Optional[int] = Field(None, ge=1)  # evaluations without improvement
    select_on: str = Field("auto", min_length=1)  # the valid metric that picks best/, early stopping and plateau; auto: the task's own (recipe_rules.selectable_metrics)
    log_every: int = Field(20, ge=1)
    average: Literal["none", "uniform", "ema"] = "none"  # evaluate and save averaged weights: a plain mean (as NT-ASGD) or an exponential one
    average_start: int = Field(0, ge=0)  # average: the optimizer steps made before averaging starts
    average_decay: float = Field(0.999, gt=0.0, lt=1.0)  # average: ema: the weight of the average at each step
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 where the device runs it natively, else fp32
    threads: Union[Literal["auto"], int] = "auto"  # CPU threads, 1..1024; auto: the cores other processes leave free
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient: stop naming the batch, or skip the batch (100 in a row: stop)
    class_weights: Union[None, Literal["balanced"], dict[str, float]] = None  # classification, tagging (softmax head): weight of each class or tag in the loss
    loss: Literal["mse", "huber"] = "mse"  # regression
    freeze_pretrained: int = Field(0, ge=0)  # model.init_from: epochs during which the loaded tensors stay fixed
    unfreeze: Literal["all", "gradual"] = "all"  # then: all at once, or one layer group more each epoch, from the top
    lr_decay_per_layer: float = Field(1.0, ge=1.0)  # discriminative learning rates: each layer group down learns at lr / this
    teacher_forcing: float = Field(1.0, ge=0.0, le=1.0)  # seq2seq: share of decoder steps fed the gold previous token, first epoch
    teacher_forcing_end: Optional[float] = Field(None, ge=0.0, le=1.0)  # seq2seq: ... last epoch (linear in between); null: constant
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)  # seq2seq: training loss against (1 - this) x the gold token + this spread over the vocabulary

    @field_validator("threads", mode="before")
    @classmethod
    def _thread_count(cls, value: Any) -> Any:
        if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1024):
            raise ValueError("expected auto or a number of threads from 1 to 1024")
        return value


class GenerateConfig(_Section):
    """Sampling settings: the sample printed after training, and `seqkit generate` defaults."""

    prompt: str = ""
    # the ranges of seqkit generate's options (decoding.LIMITS)
    max_tokens: int = Field(50, ge=1, le=100_000)
    temperature: float = Field(1.0, gt=0.0, le=100.0, allow_inf_nan=False)
    top_k: Optional[int] = Field(None, ge=1, le=1_000_000)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)


class Recipe(_Section):
    """A whole recipe. ``Recipe.model_dump()`` is what ``config.yaml`` holds."""

    task: Task
    seed: int = Field(0, ge=0, lt=2**63)  # what torch.manual_seed takes
    output_dir: str = Field("runs/run", min_length=1)
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    target_tokenizer: Optional[TokenizerConfig] = None  # seq2seq: the outputs' tokenizer (null: like tokenizer)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()


def is_text_encoding(name: str) -> bool:
    """Whether ``name`` is a text encoding Python knows (``codecs.lookup``; base64, zlib and
    rot13 are codecs too, but not text encodings)."""
    try:
        codecs.lookup(name)
        "\n".encode(name)
    except LookupError:
        return False
    return True


def splits_at_newline_byte(encoding: str) -> bool:
    """Whether text in ``encoding`` writes a newline as the single byte 0x0A, so that a file
    can be cut into lines at that byte (UTF-8, latin-1, cp1252: yes; UTF-16, UTF-32: no)."""
    encoder = codecs.getincrementalencoder(encoding)()
    encoder.encode("a")  # a byte order mark, where the encoding writes one, comes first
    return encoder.encode("\n") == b"\n"


def load_recipe(path: str | Path, overrides: Iterable[str] = (), check_files: bool = True) -> Recipe:
    """Read, override and validate a recipe file.

    Args:
        path: the YAML recipe.
        overrides: ``SECTION.KEY=VALUE`` strings; values are parsed as YAML scalars.
        check_files: also check that the data and tokenizer files it names exist.

    Returns:
        The validated recipe.

    Raises:
        RecipeError: listing every problem found, one line each.
    """
    path = Path(path)
    data, root = _parse_recipe(path, _read_recipe_text(path))
    locate = _Locator(path, root)
    problems = locate.duplicate_keys()
    override_problems, where = _apply_overrides(data, overrides, locate)
    problems += override_problems
    recipe, type_problems = _validate(data, where)
    problems += type_problems
    found = check_consistency(recipe) if recipe is not None else []
    if check_files:
        found += _check_files(data, path.parent)  # on the raw values, so they show even beside type errors
    problems += [f"{where(loc)}: {'.'.join(loc)}: {msg}" for loc, msg in found]
    if problems:
        raise RecipeError(problems)
    return recipe


def _read_recipe_text(path: Path) -> str:
    """The recipe file's text (UTF-8, a byte order mark dropped); ``RecipeError`` if it
    cannot be read or is not UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError([f"{path}: recipe not found"]) from None
    except OSError as error:
        raise RecipeError([f"{path}: cannot read the recipe ({error.strerror or error})"]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise RecipeError([f"{path}:{line}: not UTF-8 text (convert the recipe to UTF-8)"]) from None


def _parse_recipe(path: Path, text: str) -> tuple[dict[str, Any], yaml.Node | None]:
    """The recipe's YAML as a dict of sections (an empty section: ``{}``) and its node tree
    (for line numbers); ``RecipeError`` for a syntax error or YAML that is not a mapping."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        raise RecipeError([_yaml_syntax_error(path, text, error)]) from None
    except yaml.YAMLError as error:
        raise RecipeError([f"{path}: YAML syntax error: {error}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([f"{path}:1: a recipe is a mapping of sections (task, data, model, train, ...)"])
    for section in _SECTIONS:
        if section in data and data[section] is None:
            data[section] = {}
    return data, root


def _apply_overrides(data: dict[str, Any], overrides: Iterable[str], locate: _Locator) -> tuple[list[str], Callable[[tuple[str, ...]], str]]:
    """Apply ``--set`` overrides to ``data``. Returns the problems with them and ``where``:
    for a key path, the ``--set`` that gave its value, else its ``file:line``."""
    problems, override_sources = [], {}
    for item in overrides:
        key_path, problem = _apply_override(data, item)
        if problem:
            problems.append(f"--set {item}: {problem}")
        else:
            override_sources[key_path] = f"--set {item}"

    def where(loc: tuple[str, ...]) -> str:
        for depth in range(len(loc), 0, -1):
            if loc[:depth] in override_sources:
                return override_sources[loc[:depth]]
        below = [source for key_path, source in override_sources.items() if key_path[: len(loc)] == loc]
        return below[0] if below else locate(loc)  # `--set train.epochs.x=1` made train.epochs a mapping

    return problems, where


def _yaml_syntax_error(path: Path, text: str, error: yaml.MarkedYAMLError) -> str:
    """One line for a YAML syntax error. An unclosed ``[``, ``{`` or quote is reported where
    it opened, with where the parser gave up (often lines later); any other error where the
    parser gave up, with the construct it was in when PyYAML names one."""
    problem, opened = error.problem_mark, error.context_mark
    if problem is None or opened is None:
        mark = problem or opened
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        hint = " (use spaces: YAML takes no tabs there)" if "'\\t'" in (error.problem or "") else ""
        return f"{where}: YAML syntax error: {error.problem or error}{hint}"
    if error.context in _OPENED:
        opener = text[opened.index] if opened.index < len(text) else ""
        ended = "end of stream" in error.problem or "<stream end>" in error.problem  # else perhaps a missing comma
        state = "is not closed" if ended or error.context.endswith("scalar") else "is not closed, or lacks a ','"
        return (f"{path}:{opened.line + 1}:{opened.column + 1}: YAML syntax error: {_OPENED[error.context]} ({opener!r}) opened here {state} "
                f"(the parser gave up at line {problem.line + 1}, column {problem.column + 1}: {error.problem})")  # fmt: skip
    construct = re.match(r"while (?:parsing|scanning|constructing) an? (.+)", error.context or "")
    inside = f"in the {construct[1]} that starts at" if construct else f"{error.context}, from"
    return (f"{path}:{problem.line + 1}:{problem.column + 1}: YAML syntax error: {error.problem} "
            f"({inside} line {opened.line + 1}, column {opened.column + 1})")


def recipe_from_dict(data: dict[str, Any], source: str | Path) -> Recipe:
    """Validate a recipe that is already a dict (a checkpoint's ``config.yaml``)."""
    recipe, problems = _validate(data, lambda loc: str(source))
    if recipe is not None:
        problems += [f"{source}: {'.'.join(loc)}: {msg}" for loc, msg in check_consistency(recipe)]
    if problems:
        raise RecipeError(problems)
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML, every default written out, in schema order."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _check_files(data: dict[str, Any], recipes: Path) -> list[tuple[tuple[str, ...], str]]:
    """Data and tokenizer files named by a (raw) recipe that are missing or not files
    (``recipes``: the recipe's folder, where a missing ``init_from`` run may be made)."""
    problems = []
    sections = {name: data.get(name) if isinstance(data.get(name), dict) else {} for name in ("data", "tokenizer")}
    held_out = isinstance(sections["data"].get("holdout"), dict)
    for split in ("train",) if held_out else ("train", "valid"):
        if sections["data"].get(split) is None:
            problems.append((("data", split), f"missing: the path of the {'training' if split == 'train' else 'validation'} file"))
    for loc in (("data", "train"), ("data", "valid"), ("data", "test"), ("tokenizer", "path")):
        value = sections[loc[0]].get(loc[1])
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                problems += _file_problem(loc, item)
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    embeddings = model.get("embeddings")
    if isinstance(embeddings, dict) and isinstance(embeddings.get("pretrained"), str):
        problems += _file_problem(("model", "embeddings", "pretrained"), embeddings["pretrained"])
    source = model.get("init_from")
    if isinstance(source, str) and not source.startswith(("http://", "https://")) and not Path(source).exists() and not Path(source + ".old").is_dir():
        maker = _recipe_writing(Path(source), recipes)
        hint = f"; train {maker} first: it writes that run" if maker else " (a checkpoint directory, archive or URL)"
        problems.append((("model", "init_from"), f"not found: {source}{hint}"))
    return problems


def _recipe_writing(checkpoint: Path, recipes: Path) -> Optional[Path]:
    """The recipe in ``recipes`` whose run holds ``checkpoint`` (``OUTPUT_DIR/best`` or
    ``/last``), if one does: a recipe that starts from another recipe's run."""
    if checkpoint.name not in ("best", "last"):
        return None
    for candidate in sorted(recipes.glob("*.y*ml")):
        try:
            output_dir = (yaml.safe_load(candidate.read_text(encoding="utf-8")) or {}).get("output_dir")
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
            continue  # not a recipe this can read: no hint from it
        if isinstance(output_dir, str) and Path(output_dir) == checkpoint.parent:
            return candidate
    return None


def _file_problem(loc: tuple[str, ...], value: str) -> list[tuple[tuple[str, ...], str]]:
    path = Path(value)
    if not value.strip():
        return [(loc, "an empty path: give a file")]
    if not path.exists():
        return [(loc, f"file not found: {value}")]
    if not path.is_file():
        return [(loc, f"not a file: {value}")]
    return []


def _validate(data: dict[str, Any], where) -> tuple[Recipe | None, list[str]]:
    try:
        return Recipe.model_validate(data), []
    except ValidationError as error:
        # a value that fits no member of a union (`data.train: 5`) fails once per member: one line
        merged: dict[tuple, dict[str, Any]] = {}
        for e in error.errors():
            loc = tuple(part for part in e["loc"] if not (isinstance(part, str) and _UNION_MEMBER.match(part)))
            key = (loc, repr(e.get("input")))
            if key in merged and e["type"] not in ("extra_forbidden", "missing"):
                merged[key]["msg"] += " or " + e["msg"].removeprefix("Input should be ")
            else:
                merged.setdefault(key, {**e, "loc": loc})
        return None, [_describe(e, where) for e in merged.values()]


def _describe(error: dict[str, Any], where) -> str:
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        hint = _did_you_mean(loc)
        return f"{where(loc)}: {key}: unknown key{hint}"
    if kind == "missing":
        allowed = f" (one of {', '.join(TASKS)})" if loc == ("task",) else ""
        return f"{where(loc)}: {key}: missing{allowed}"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "literal_error" and isinstance(error.get("input"), str):
        expected = re.findall(r"'([^']*)'", message)
        close = difflib.get_close_matches(error["input"].lower(), expected, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    if kind == "model_type":
        message = "expected a mapping of keys (section: {key: value, ...})"
    return f"{where(loc)}: {key}: {message}, got {as_written(error.get('input'))}"


def _did_you_mean(loc: tuple[str, ...]) -> str:
    """Suggest the key the user meant: a close spelling in the same section, else the
    same name in another section (``train.hidden_size`` -> ``model.hidden_size``)."""
    sections = {name: field.annotation.model_fields for name, field in Recipe.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}  # fmt: skip
    name = loc[-1]
    same_level = list(Recipe.model_fields) if len(loc) == 1 else list(sections.get(loc[0], ()))
    close = difflib.get_close_matches(name, same_level, n=1)
    if close:
        return f" (did you mean {close[0]}?)" if len(loc) == 1 else f" (did you mean {loc[0]}.{close[0]}?)"
    elsewhere: dict[str, str] = {}  # key -> the first section that has it
    for section, keys in sections.items():
        for key in keys:
            elsewhere.setdefault(key, section)
    close = [name] if name in elsewhere else difflib.get_close_matches(name, list(elsewhere), n=1, cutoff=0.8)
    if close:
        return f" (did you mean {elsewhere[close[0]]}.{close[0]}?)"
    return f" (sections are: {', '.join(Recipe.model_fields)})" if len(loc) == 1 else ""


def _apply_override(data: dict[str, Any], item: str) -> tuple[tuple[str, ...], str | None]:
    """Set ``a.b=value`` into ``data``; returns the key path and a problem, if any."""
    if "=" not in item:
        return (), "expected SECTION.KEY=VALUE"
    dotted, raw = item.split("=", 1)
    key_path = tuple(part.strip() for part in dotted.split("."))
    if not all(key_path):
        return (), "expected SECTION.KEY=VALUE"
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not a YAML scalar: take the text as it is
    node = data
    for depth, part in enumerate(key_path[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            return (), f"{'.'.join(key_path[: depth + 1])} is not a section"
        node = child
    node[key_path[-1]] = value
    return key_path, None


class _Locator:
    """Maps a key path to ``file:line`` using the YAML node tree (PyYAML keeps marks there)."""

    def __init__(self, path: Path, root: yaml.Node | None):
        self.path = path
        self.root = root

    def __call__(self, loc: tuple[str, ...]) -> str:
        node, line = self.root, None
        for part in loc:
            if not isinstance(node, yaml.MappingNode):
                break
            for key_node, value_node in node.value:
                if key_node.value == part:
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                break  # a missing key: point at the section that should hold it
        return f"{self.path}:{line}" if line else str(self.path)

    def duplicate_keys(self) -> list[str]:
        problems: list[str] = []

        def walk(node: yaml.Node, prefix: str) -> None:
            if not isinstance(node, yaml.MappingNode):
                return
            seen: set[str] = set()
            for key_node, value_node in node.value:
                name = f"{prefix}{key_node.value}"
                if key_node.value in seen:
                    problems.append(f"{self.path}:{key_node.start_mark.line + 1}: {name}: duplicate key (the later value would win silently)")
                seen.add(key_node.value)
                walk(value_node, name + ".")

        if self.root is not None:
            walk(self.root, "")
        return problems
