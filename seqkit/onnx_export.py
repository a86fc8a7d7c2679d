"""ONNX export (``seqkit export CHECKPOINT DIR --format onnx``) and the ONNX Runtime path
(``from_pretrained(DIR, runtime="onnx")``).

An exported model is a directory that needs no checkpoint beside it::

    model.onnx        the graph and its weights (opset 20), and in its metadata the task (and a CRF's scores)
    config.yaml       the checkpoint's recipe, as it was (the runtime reads data and model settings)
    tokenizer.json    the tokenizer (absent for vector inputs)
    labels.json       the tags, classes or regression targets (absent for a language model)

What the graph holds, per task (every batch and time axis dynamic):

- tagging: ``token_ids`` (batch, time), ``lengths`` (batch,) [, ``char_ids`` (words,
  word_length), ``char_index`` (batch, time)] -> ``emissions`` (batch, time, tags). Decoding
  (Viterbi, forward-backward, span probabilities) stays outside, in the same
  ``TaggingHead``/``CRF`` code as the PyTorch path; the CRF's transition scores travel in
  ``model.onnx``'s metadata (``seqkit.crf``).
- classification / regression: ``inputs`` (batch, time) ids or (batch, time, features)
  vectors, ``lengths`` -> ``outputs`` (batch, classes | outputs), or (batch, time, outputs)
  per step [, ``attention`` (batch, time) for attention pooling].
- language_model: ``token_ids`` (batch, time), ``state_h`` [, ``state_c``] (layers, batch,
  hidden) -> ``scores`` (batch, time, vocab: the head's logits, or log-probabilities for an
  adaptive softmax), ``next_state_h`` [, ``next_state_c``]: the state is carried by the caller.

ONNX has no ``PackedSequence``; its ``RNN`` / ``GRU`` / ``LSTM`` nodes take a ``sequence_lens``
input instead, which the exporter fills from the packing (``PaddedEncoder``): each sequence
is read within its own length, the backward direction of a bidirectional layer from the
sequence's last real step (not from padding), outputs at padding are zero and final states
are taken at each sequence's last real step, as with packing. ONNX Runtime 1.32 reads them
so (the export's check below covers lengths 7, 4 and 1, unsorted batches are tested).

The graph is written by PyTorch's TorchScript-based exporter (``dynamo=False``, deprecated
but present in torch 2.13). Its successor, the dynamo exporter, could not serve: it cannot
trace ``pack_padded_sequence`` (sizes that depend on the data), and in torch 2.13 it fixes
the time axis to the sample's length for an ``nn.RNN`` (which it unrolls step by step) and
for an LSTM or GRU given an initial state (a language model's carried state).

The runtime (``OnnxModel``) stands where the ``SequenceModel`` stands: the API's
tokenization, batching, decoding, spans and offsets are the same code for both runtimes.

``--quantize int8`` then stores the LSTM layers' weights in int8 (ONNX Runtime's dynamic
quantization: ``DynamicQuantizeLSTM``, activations quantized as they come): the recurrence
is most of a tagger's time, and int8 weights halve it on a CPU with or without VNNI. Scores
move by up to about 0.1 (the float graph is checked against PyTorch first; the int8
graph's difference is reported, not bounded), so a few tags can change, and a sentence's
scores depend slightly on its batch (activations are scaled by each batch's range) and on
the thread count: evaluate the export on your data before deploying it. ``model.onnx``'s metadata says ``seqkit.quantized: int8``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .checkpoint import CONFIG, LABELS, TOKENIZER, WEIGHTS, _swap_in, read_config, read_labels
from .config import Recipe
from .data import collate_sequences, collate_tagged
from .encoders import RNNEncoder, State
from .errors import CheckpointError, SeqkitError
from .labels import LabelSet, Targets, allowed_transitions
from .heads import TaggingHead
from .hf_hub import is_hf
from .hub import is_url
from .tokenize import load_tokenizer, special_ids, word_ids

MODEL = "model.onnx"
EXPORT_FILES = frozenset({MODEL, CONFIG, TOKENIZER, LABELS})
EXPORTABLE = ("tagging", "classification", "regression", "language_model")
OPSET = 20
TOLERANCE = 1e-4  # the export is checked against PyTorch on a batch of mixed lengths to this
QUANTIZE = ("int8",)
INSTALL = "pip install seqkit[onnx]"


def require(*modules: str) -> None:
    """Import ``modules`` (onnx, onnxruntime) or say in one line how to get them. The
    TorchScript-based exporter used here needs no onnxscript (only the dynamo one does)."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise SeqkitError(f"{module} is not installed; ONNX export and runtime='onnx' need the onnx extra: {INSTALL}") from None


class PaddedEncoder(nn.Module):
    """An ``RNNEncoder`` for export: the same ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``, the same
    results, and a graph of one ONNX ``RNN`` / ``GRU`` / ``LSTM`` node per layer.

    With ``lengths`` the inputs are packed as ``RNNEncoder`` packs them, but without the
    sort by length: the exporter turns the ``pack_padded_sequence`` / ``pad_packed_sequence``
    pair into the node's ``sequence_lens``, which ONNX Runtime reads in any order, and the
    sort (a TopK and a few gathers) would only cost time. So the backward direction of a
    bidirectional layer starts at each sequence's last real step, outputs at padding are
    zero, and final states are those after each sequence's last real step -- in one
    bidirectional node instead of a node per direction with gathers reversing each
    sequence around the backward one (the int8 tagger's own call 10 % faster). The sample
    batches ``_graph`` traces with are sorted longest first; a traced batch that is not
    (a character BiLSTM's words) keeps the sort, so the eager check passes.
    """

    def __init__(self, encoder: RNNEncoder):
        super().__init__()
        self.rnn = encoder.rnn
        self.cell, self.hidden_size, self.num_layers, self.num_directions = encoder.cell, encoder.hidden_size, encoder.num_layers, encoder.num_directions

    def state_shape(self, batch_size: int) -> tuple[int, int, int]:
        return (self.num_layers * self.num_directions, batch_size, self.hidden_size)

    def forward(self, inputs: torch.Tensor, lengths: Optional[torch.Tensor] = None, initial_state: Optional[State] = None) -> tuple[torch.Tensor, State]:
        if lengths is None:  # every sequence fills the time axis (a language model)
            return self.rnn(inputs, initial_state)
        in_order = bool((lengths[:-1] >= lengths[1:]).all())  # a constant of the trace, not a node
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=in_order)
        states, final = self.rnn(packed, initial_state)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=inputs.shape[1])
        # The last layer's final state, read from its outputs (the forward direction's at each
        # sequence's last real step, the backward's at step 0): the TorchScript exporter fails
        # on a packed RNN whose outputs nothing reads (a character BiLSTM's, whose final state alone is used).
        h, c = final if self.cell == "lstm" else (final, None)
        size, directions = self.hidden_size, self.num_directions
        last = states.gather(1, (lengths - 1)[:, None, None].expand(-1, 1, states.shape[2]))[:, 0]  # (batch, directions * hidden)
        top = [last[:, :size]] + ([states[:, 0, size:]] if directions == 2 else [])
        h = torch.cat([h[:-directions], torch.stack(top)]) if self.num_layers > 1 else torch.stack(top)
        return states, ((h, c) if self.cell == "lstm" else h)


def padded_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every ``RNNEncoder`` (the encoder, and the
    character features' BiLSTM) replaced by its ``PaddedEncoder``."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, RNNEncoder):
                setattr(parent, name, PaddedEncoder(child))
    return model


class _TaggerGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor, char_ids: Optional[torch.Tensor] = None,
                char_index: Optional[torch.Tensor] = None) -> torch.Tensor:  # fmt: skip
        emissions, _ = self.model(token_ids, lengths, char_ids=char_ids, char_index=char_index)
        return emissions


class _SequenceGraph(nn.Module):
    def __init__(self, model: nn.Module, attention: bool):
        super().__init__()
        self.model, self.attention = model, attention

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor):
        outputs, weights = self.model.predict(inputs, lengths, self.attention)
        return (outputs, weights) if self.attention else outputs


class _LanguageModelGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor, state_h: torch.Tensor, state_c: Optional[torch.Tensor] = None):
        scores, state = self.model(token_ids, state=(state_h, state_c) if state_c is not None else state_h)
        return (scores, *state) if isinstance(state, tuple) else (scores, state)


def _graph(task: str, model: nn.Module, recipe: Recipe, tokenizer: Any) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, dict[int, Any]], list[str]]:
    """The module to export, sample inputs of mixed lengths (named), their dynamic axes
    and the output names. The sample's sizes differ from each other, so the exporter
    keeps every axis symbolic."""
    batch, time = "batch", "time"
    pad_id = special_ids(tokenizer).pad if tokenizer is not None else 0
    lengths = [7, 4, 1]
    if task == "tagging":
        # 12 distinct words of up to 9 bytes: no size equals another (3 sentences, 7 steps)
        known = [word for word in tokenizer.get_vocab() if len(word.encode()) < 9 and not word.startswith("<")][:3]
        words = [[f"s{row}w{index}" for index in range(length)] for row, length in enumerate(lengths)]
        words[0][: len(known) + 1] = ["abcdefghi", *known]
        with_chars = model.embedding.char_features is not None
        tensors = collate_tagged([word_ids(tokenizer, sentence) for sentence in words], words if with_chars else None, None, pad_id)
        inputs = {"token_ids": tensors.token_ids, "lengths": tensors.lengths}
        axes: dict[str, dict[int, Any]] = {"token_ids": {0: batch, 1: time}, "lengths": {0: batch}, "emissions": {0: batch, 1: time}}
        if with_chars:
            inputs.update(char_ids=tensors.char_ids, char_index=tensors.char_index)
            axes.update(char_ids={0: "words", 1: "word_length"}, char_index={0: batch, 1: time})
        return _TaggerGraph(model), inputs, axes, ["emissions"]
    if task in ("classification", "regression"):
        generator = torch.Generator().manual_seed(0)
        if tokenizer is None:
            sequences = [np.random.default_rng(0).standard_normal((length, recipe.model.input_size)).astype(np.float32) for length in lengths]
        else:
            sequences = [torch.randint(0, tokenizer.get_vocab_size(), (length,), generator=generator).tolist() for length in lengths]
        tensors = collate_sequences(sequences, pad_id)
        attention = recipe.model.pooling == "attention"
        axes = {"inputs": {0: batch, 1: time}, "lengths": {0: batch}, "outputs": {0: batch, 1: time} if recipe.model.pooling == "none" else {0: batch},
                "attention": {0: batch, 1: time}}
        return _SequenceGraph(model, attention), {"inputs": tensors.inputs, "lengths": tensors.lengths}, axes, ["outputs"] + (["attention"] if attention else [])
    encoder = model.encoder
    token_ids = torch.randint(0, tokenizer.get_vocab_size(), (3, 7), generator=torch.Generator().manual_seed(0))
    inputs = {"token_ids": token_ids, "state_h": torch.randn(encoder.state_shape(3)) * 0.5}
    axes = {"token_ids": {0: batch, 1: time}, "state_h": {1: batch}, "scores": {0: batch, 1: time}, "next_state_h": {1: batch}}
    names = ["scores", "next_state_h"]
    if encoder.cell == "lstm":
        inputs["state_c"], axes["state_c"], axes["next_state_c"] = torch.randn(encoder.state_shape(3)) * 0.5, {1: batch}, {1: batch}
        names.append("next_state_c")
    return _LanguageModelGraph(model), inputs, axes, names


def export_onnx(checkpoint: str | Path, directory: str | Path, *, overwrite: bool = False, quantize: Optional[str] = None,
                report: Optional[Callable[[str], None]] = None) -> tuple[Path, float]:  # fmt: skip
    """Export a checkpoint (anything ``hub.resolve`` takes) as an ONNX directory (see the
    module's docstring), checked first: ONNX Runtime must match PyTorch on a batch of mixed
    lengths within ``TOLERANCE``, else nothing is written.

    Args:
        overwrite: replace ``directory`` if it holds an ONNX export (nothing else is ever replaced).
        quantize: ``"int8"``: the LSTM layers' weights in int8, after the check (a model
            without an LSTM layer is refused).
        report: told, in a line, which checkpoint of a run directory is exported.

    Returns:
        The directory and the largest absolute difference from PyTorch measured on that
        batch (with ``quantize``, the int8 graph's).

    Raises:
        SeqkitError: onnx or onnxruntime missing; ``directory`` exists (without
            ``overwrite``) or holds anything but an export; a task ONNX cannot hold.
        CheckpointError: ``checkpoint`` does not load.
    """
    from .hub import _loaded, resolve

    directory = Path(directory)
    if directory.name.endswith(".onnx"):
        raise SeqkitError(f"{directory}: --format onnx writes a directory ({MODEL} with config.yaml, tokenizer.json and labels.json beside it): "
                          f"name the directory, e.g. {directory.with_suffix('') if directory.stem else 'exported'}")  # fmt: skip
    if quantize is not None and quantize not in QUANTIZE:
        raise SeqkitError(f"quantize: expected {' or '.join(map(repr, QUANTIZE))}, got {quantize!r}")
    check_export_target(directory, overwrite)
    require("onnx", "onnxruntime")
    source = resolve(checkpoint, report=report)
    loaded = _loaded(source, checkpoint, "cpu")
    task = loaded.recipe.task
    if task not in EXPORTABLE:
        raise SeqkitError(f"{checkpoint}: a {task} model cannot be exported to ONNX (its decoding loop runs step by step in Python); "
                          f"--format onnx exports {', '.join(EXPORTABLE[:-1])} and {EXPORTABLE[-1]} models")  # fmt: skip
    if quantize and not any(isinstance(module, RNNEncoder) and module.cell == "lstm" for module in loaded.model.modules()):
        raise SeqkitError(f"{checkpoint}: --quantize int8 stores LSTM layers' weights in int8 (ONNX Runtime's int8 LSTM), "
                          f"and this {loaded.recipe.model.encoder} model has none: export it without --quantize")  # fmt: skip
    graph, inputs, axes, outputs = _graph(task, padded_copy(loaded.model), loaded.recipe, loaded.tokenizer)
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir(parents=True)
        for name in (CONFIG, TOKENIZER, LABELS):
            if (source / name).is_file():
                shutil.copyfile(source / name, temporary / name)
        _write_graph(graph, inputs, axes, outputs, temporary / MODEL, _metadata(task, loaded.model))
        difference = _check(loaded.model, task, inputs, temporary / MODEL)
        if quantize:
            _quantize(temporary / MODEL)
            difference = _check(loaded.model, task, inputs, temporary / MODEL, limit=None)
        _swap_in(temporary, directory)
    except OSError as error:
        raise SeqkitError(f"{directory}: cannot write the export ({error.strerror or error}); nothing was written there") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return directory, difference


def check_export_target(directory: Path, overwrite: bool, *, files: frozenset[str] = EXPORT_FILES, marker: str = MODEL,
                        kind: str = "an ONNX export") -> None:  # fmt: skip
    """Refuse to write an export where it would replace what the user did not ask to
    replace: an existing export (unless ``overwrite``), or anything that is not one. An
    export is a directory of ``files`` only, ``marker`` among them (``hf_hub`` checks its
    Hub folders here too)."""
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise SeqkitError(f"{directory}: exists and is not a directory: name a new directory for the export")
    if not directory.exists():
        blocked = next((parent for parent in directory.parents if parent.exists() and not parent.is_dir()), None)
        if blocked is not None:
            raise SeqkitError(f"{directory}: cannot write it: {blocked} is a file, not a directory (choose another path)")
        return
    entries = list(directory.iterdir())
    if not entries:
        return
    if (directory / marker).is_file() and all(path.is_file() and path.name in files for path in entries):
        if not overwrite:
            raise SeqkitError(f"{directory}: already holds {kind}: pass --overwrite to replace it, or choose another name")
        return
    what = "a checkpoint" if (directory / WEIGHTS).is_file() else "other files"
    raise SeqkitError(f"{directory}: holds {what}, not {kind}, and the export would replace it whole: name a new or empty directory")


def _metadata(task: str, model: nn.Module) -> dict[str, str]:
    """What the runtime needs beside the graph: the task, and a tagger's CRF scores
    (float32 values, exact through JSON)."""
    metadata = {"seqkit.task": task}
    if task == "tagging":
        crf = model.head.crf
        metadata["seqkit.crf"] = json.dumps({name: getattr(crf, name).detach().cpu().tolist() for name in ("transitions", "start_transitions", "end_transitions")})
    return metadata


def _write_graph(graph: nn.Module, inputs: dict[str, torch.Tensor], axes: dict, outputs: list[str], path: Path, metadata: dict[str, str]) -> None:
    import io
    import warnings

    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _without_packing_warnings():  # its tracer's and deprecation warnings are not the user's
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, tuple(inputs.values()), buffer, dynamo=False, input_names=list(inputs), output_names=outputs,
                          dynamic_axes={name: axes[name] for name in [*inputs, *outputs]}, opset_version=OPSET, do_constant_folding=True)  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


@contextlib.contextmanager
def _without_packing_warnings() -> Iterator[None]:
    """Drop the lines PyTorch's C++ shape inference writes to stderr while exporting a packed
    RNN ("The shape inference of prim::PackPadded type is missing"): the graph's shapes come
    out right regardless, and ``_check`` runs it against PyTorch right after. Anything else
    written to stderr meanwhile is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if "prim::PackPadded" not in line and "prim::PadPacked" not in line:
                    sys.stderr.write(line)


def _quantize(path: Path) -> None:
    """Rewrite the graph at ``path`` with its LSTM nodes' weights in int8 (dynamic
    quantization), keeping its metadata and marking it ``seqkit.quantized``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    metadata = {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}
    quantized = path.with_name(f".int8-{path.name}")
    logging.disable(logging.WARNING)  # its advice to pre-process the graph (for convolutions) is not the user's concern
    try:
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"])
        proto = onnx.load(str(quantized))
    finally:
        logging.disable(logging.NOTSET)
        quantized.unlink(missing_ok=True)
    del proto.metadata_props[:]
    for key, value in {**metadata, "seqkit.quantized": "int8"}.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def _check(model: nn.Module, task: str, inputs: dict[str, torch.Tensor], path: Path, limit: Optional[float] = TOLERANCE) -> float:
    """The largest absolute difference between ONNX Runtime and PyTorch on ``inputs``
    (three sequences of lengths 7, 4 and 1); a ``SeqkitError`` above ``limit`` (times the
    outputs' largest magnitude, where that is above 1; ``None``: none)."""
    session = _session(path, threads=1)
    got = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})
    with torch.inference_mode():
        if task == "tagging":
            expected = [model(inputs["token_ids"], inputs["lengths"], char_ids=inputs.get("char_ids"), char_index=inputs.get("char_index"))[0]]
        elif task == "language_model":
            scores, state = model(inputs["token_ids"], state=(inputs["state_h"], inputs["state_c"]) if "state_c" in inputs else inputs["state_h"])
            expected = [scores, *(state if isinstance(state, tuple) else (state,))]
        else:
            outputs, weights = model.predict(inputs["inputs"], inputs["lengths"], len(got) > 1)
            expected = [outputs] + ([weights] if weights is not None else [])
    difference, scale = 0.0, 1.0
    for mine, theirs in zip(got, expected):
        theirs = theirs.float().numpy()
        difference, scale = max(difference, float(np.abs(mine - theirs).max())), max(scale, float(np.abs(theirs).max()))
    if limit is not None and not difference <= limit * scale:  # relative to the outputs' size once they exceed 1 (a large model's logits)
        raise SeqkitError(f"the exported graph differs from the PyTorch model by {difference:.3g} (more than {limit * scale:.3g}): nothing was written")
    return difference


def _session(path: Path, threads: Optional[int] = None):
    """An ONNX Runtime CPU session on ``path``, computing with ``threads`` threads (default:
    as many as torch computes with, which ``runtime.choose_threads`` set for the CLI)."""
    require("onnxruntime")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Idle pool threads sleep instead of spinning: with two threads, the shipped NER tagger's
    # int8 export on an idle 2-core Zen 3 gave ~1.3 CPU-seconds per second of calls instead
    # of 2.0 (spinning holds both cores between calls), p99 latency 4.7-5.1 ms instead of
    # 8.9-9.2, and 1,190-1,390 sentences/s at batch 32 instead of 880-920.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _Stub(nn.Module):
    """What the API's code reads of a ``SequenceModel``'s parts: ``embedding.char_features``
    (whether to pass bytes), ``encoder.cell`` and ``encoder.state_shape`` (a language
    model's state)."""

    def __init__(self, **attributes: Any):
        super().__init__()
        for name, value in attributes.items():
            object.__setattr__(self, name, value)

    def state_shape(self, batch_size: int) -> tuple[int, int, int]:
        return (self.num_layers * self.num_directions, batch_size, self.hidden_size)


class OnnxModel(nn.Module):
    """An exported model run by ONNX Runtime, in the place of a ``SequenceModel``: the same
    ``forward`` (a tagger's emissions, a language model's scores and state) and
    ``predict`` (a classifier's or regression model's outputs), on the CPU. A tagger's
    ``head`` is a real ``TaggingHead`` holding the exported CRF scores, so decoding is the
    PyTorch path's own code.
    """

    runtime = "onnx"

    def __init__(self, path: Path, recipe: Recipe, labels: Optional[LabelSet | Targets]):
        super().__init__()
        self.session = _session(path)
        self.input_names = [node.name for node in self.session.get_inputs()]
        metadata = self.session.get_modelmeta().custom_metadata_map
        task = metadata.get("seqkit.task")
        if task != recipe.task:
            raise CheckpointError(path, f"holds a {task or 'non-seqkit'} graph, but config.yaml beside it is a {recipe.task} recipe")
        config = recipe.model
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # the device the API reads: the CPU
        self.embedding = _Stub(char_features=config.char_features if config.char_features != "none" else None)
        self.encoder = _Stub(cell=config.encoder, num_layers=config.num_layers, num_directions=2 if config.bidirectional else 1, hidden_size=config.hidden_size)
        self.head = None
        if task == "tagging":
            allowed, can_start, can_end = allowed_transitions(labels.labels, labels.scheme)
            self.head = TaggingHead(1, len(labels.labels), 0.0, config.crf, allowed, can_start, can_end).eval()
            scores = json.loads(metadata["seqkit.crf"])
            with torch.no_grad():
                for name, values in scores.items():
                    getattr(self.head.crf, name).copy_(torch.tensor(values, dtype=torch.float32))

    def _run(self, **inputs: Optional[torch.Tensor]) -> list[np.ndarray]:
        feed = {name: _numpy(inputs[name]) for name in self.input_names}
        return self.session.run(None, feed)

    def forward(self, inputs: torch.Tensor, lengths: Optional[torch.Tensor] = None, state: Optional[State] = None,
                char_ids: Optional[torch.Tensor] = None, char_index: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[State]]:  # fmt: skip
        """``SequenceModel.forward``: a tagger's emissions, or a language model's scores and final state."""
        if "state_h" not in self.input_names:
            if lengths is None:
                lengths = torch.full((inputs.shape[0],), inputs.shape[1], dtype=torch.long)
            outputs = self._run(token_ids=inputs, inputs=inputs, lengths=lengths, char_ids=char_ids, char_index=char_index)
            return torch.from_numpy(outputs[0]), None
        if state is None:
            zeros = torch.zeros(self.encoder.state_shape(inputs.shape[0]))
            state = (zeros, zeros) if self.encoder.cell == "lstm" else zeros
        h, c = state if isinstance(state, tuple) else (state, None)
        scores, *final = (torch.from_numpy(array) for array in self._run(token_ids=inputs, state_h=h, state_c=c))
        return scores, tuple(final) if len(final) > 1 else final[0]

    def predict(self, inputs: torch.Tensor, lengths: torch.Tensor, attention: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``SequenceModel.predict``: the head's outputs and, with ``attention``, the weights."""
        outputs = [torch.from_numpy(array) for array in self._run(inputs=inputs, lengths=lengths)]
        return outputs[0], (outputs[1] if attention else None)

    def encode(self, *args: Any, **kwargs: Any):
        raise SeqkitError("this needs the encoder's states, which the ONNX graph does not give: load the checkpoint with runtime='torch'")


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU tensor's memory as a NumPy array (no copy); any other tensor copied there."""
    if tensor.device.type == "cpu" and not tensor.requires_grad:
        return tensor.numpy()
    return tensor.detach().cpu().numpy()


def load_onnx(path: str | Path) -> tuple[OnnxModel, Recipe, Any, Optional[LabelSet | Targets], dict[str, Any]]:
    """Read an export directory (or its ``model.onnx``): the runtime model, recipe,
    tokenizer, labels and the checkpoint's info.

    Raises:
        CheckpointError: no ``model.onnx`` there (naming the command that writes one), or
            a file beside it missing or unreadable.
        SeqkitError: onnxruntime is not installed.
    """
    if is_url(path) or is_hf(path):  # Path() would fold the slashes and hide what was asked
        raise CheckpointError(path, "runtime='onnx' reads a local export directory; fetch or unpack it first, "
                                    "or load the checkpoint with the torch runtime")  # fmt: skip
    directory = Path(path)
    if directory.name == MODEL and directory.is_file():
        directory = directory.parent
    if not (directory / MODEL).is_file():
        where = "a checkpoint, not an ONNX export" if (directory / WEIGHTS).is_file() else "no model.onnx" if directory.is_dir() else "not found"
        raise CheckpointError(directory, f"{where}: write one with seqkit export CHECKPOINT DIR --format onnx, then load DIR with runtime='onnx'")
    require("onnxruntime")
    recipe, info = read_config(directory)
    tokenizer = None
    if recipe.data.inputs == "text":
        if not (directory / TOKENIZER).is_file():
            raise CheckpointError(directory / TOKENIZER, "missing: an exported model that reads text needs its tokenizer")
        tokenizer = load_tokenizer(directory / TOKENIZER)
    labels = read_labels(directory, recipe.task) if recipe.task != "language_model" else None
    return OnnxModel(directory / MODEL, recipe, labels), recipe, tokenizer, labels, info
