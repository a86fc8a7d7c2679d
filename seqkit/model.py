"""``SequenceModel`` = embedding -> encoder -> head, and ``build_model``: the one place
where a recipe's ``model`` section becomes modules.

Training and loading both call ``build_model``, so a checkpoint is rebuilt from its
``config.yaml`` exactly as it was trained and then filled from ``model.safetensors``.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple, Optional

import torch
from tokenizers import Tokenizer
from torch import nn

from .config import ModelConfig
from .decoder import AttentionDecoder, DecoderState
from .encoders import CharFeatures, RNNEncoder, State, TokenEmbedding, VectorInput
from .errors import RecipeError
from .heads import ClassificationHead, LanguageModelHead, RegressionHead, TaggingHead
from .labels import LabelSet, Targets, allowed_transitions
from .tokenize import special_ids


class SequenceModel(nn.Module):
    """Embedding, packed recurrent encoder and task head, composed.

    Args:
        embedding: token ids -> vectors, or vector inputs as they are (has ``output_dim``).
        encoder: vectors -> states (has ``output_dim``).
        head: states -> task outputs (see ``heads.Head``).
    """

    def __init__(self, embedding: TokenEmbedding | VectorInput, encoder: RNNEncoder, head: nn.Module):
        super().__init__()
        self.embedding = embedding
        self.encoder = encoder
        self.head = head

    def forward(
        self,
        inputs: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        state: Optional[State] = None,
        char_ids: Optional[torch.Tensor] = None,
        char_index: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, State]:
        """Run the model on a padded batch.

        Args:
            inputs: (batch, time) token ids, or (batch, time, input_size) vectors.
            lengths: (batch,) real lengths, or ``None`` when no sequence is padded.
            state: the encoder's initial state (``RNNEncoder.forward``), or ``None``.
            char_ids, char_index: the words' bytes, for models with character features
                (``CharFeatures.forward``).

        Returns:
            The head's outputs (a language model's: (batch, time, vocab_size) logits; a
            classifier's: (batch, classes)) and the encoder's final state.
        """
        states, mask, final_state = self.encode(inputs, lengths, state, char_ids, char_index)
        return self.head(states, mask), final_state

    def predict(self, inputs: torch.Tensor, lengths: Optional[torch.Tensor] = None, attention: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """A many-to-one (or per-step) model's head outputs and, with ``attention``, its
        attention pooling's (batch, time) weights: what ``predict_outputs`` reads, and what
        an ONNX export of a classifier or regression model computes (``onnx_export``)."""
        states, mask, _ = self.encode(inputs, lengths)
        outputs = self.head(states, mask)
        return outputs, (self.head.pooling(states, mask)[1] if attention else None)

    def encode(
        self,
        inputs: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        state: Optional[State] = None,
        char_ids: Optional[torch.Tensor] = None,
        char_index: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor], State]:
        """The encoder's states (batch, time, directions * hidden), the (batch, time) mask of
        real steps (``None`` without ``lengths``) and the final state."""
        vectors = self.embedding(inputs, char_ids, char_index)  # (batch, time, embedding output_dim)
        states, final_state = self.encoder(vectors, lengths, state)  # (batch, time, directions * hidden)
        mask = None
        if lengths is not None:
            mask = torch.arange(inputs.shape[1], device=inputs.device) < lengths.to(inputs.device)[:, None]
        return states, mask, final_state


class ConditionedGenerator(nn.Module):
    """One-to-many: a decoder that writes a sequence from a condition (a class such as
    ``female``), or from nothing.

    The condition's learned vector enters the decoder as its initial hidden state (through
    a linear layer and tanh, for every layer; an LSTM's cell state starts at zero), as an
    extra input at every step, or both (``mode``). Without conditions it is a language
    model over whole sequences.

    Args:
        embedding: token ids -> vectors.
        encoder: the (unidirectional) recurrent decoder; its input size is the embedding's
            plus ``condition_dim`` when the condition is an input.
        head: the next-token ``LanguageModelHead``.
        num_conditions: how many conditions (0: unconditioned).
        condition_dim: size of a condition's vector.
        mode: ``state``, ``input`` or ``both``.
    """

    def __init__(self, embedding: TokenEmbedding, encoder: RNNEncoder, head: nn.Module, num_conditions: int, condition_dim: int, mode: str = "both"):
        super().__init__()
        self.embedding = embedding
        self.encoder = encoder
        self.head = head
        self.mode = mode
        self.conditions = nn.Embedding(num_conditions, condition_dim) if num_conditions else None
        self.to_state = None
        if self.conditions is not None and mode in ("state", "both"):
            self.to_state = nn.Linear(condition_dim, encoder.num_layers * encoder.hidden_size)

    def initial_state(self, conditions: Optional[torch.Tensor]) -> Optional[State]:
        """The decoder's state before the first token: from each row's condition, or zeros."""
        if self.to_state is None or conditions is None:
            return None
        layers, hidden = self.encoder.num_layers, self.encoder.hidden_size
        h = torch.tanh(self.to_state(self.conditions(conditions))).view(-1, layers, hidden).transpose(0, 1).contiguous()
        return (h, torch.zeros_like(h)) if self.encoder.cell == "lstm" else h

    def forward(
        self,
        token_ids: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        state: Optional[State] = None,
        conditions: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, State]:
        """Next-token logits (batch, time, vocab) and the final state.

        Args:
            token_ids: (batch, time) inputs (the sequence so far, starting with ``<eos>``).
            lengths: (batch,) real lengths, or ``None``.
            state: the state to continue from; ``None`` starts from the conditions.
            conditions: (batch,) condition ids (needed when the model has conditions).
        """
        if self.conditions is not None and conditions is None:
            raise ValueError("this generator is conditioned: pass conditions")
        vectors = self.embedding(token_ids)
        if self.conditions is not None and self.mode in ("input", "both"):
            per_step = self.conditions(conditions)[:, None, :].expand(-1, token_ids.shape[1], -1)
            vectors = torch.cat([vectors, per_step], dim=-1)
        if state is None:
            state = self.initial_state(conditions)
        states, final_state = self.encoder(vectors, lengths, state)
        return self.head(states), final_state


class Seq2SeqModel(nn.Module):
    """Encoder-decoder: a packed (bidirectional) encoder reads the source; an attention
    decoder (``decoder.AttentionDecoder``) writes the target, starting from the encoder's
    final states (through ``bridge``: per layer, both directions' final states -> tanh
    -> the decoder's initial state).

    Args:
        embedding: source token ids -> vectors.
        encoder: the source ``RNNEncoder``.
        decoder: the ``AttentionDecoder`` (as many layers as the encoder).
    """

    def __init__(self, embedding: TokenEmbedding, encoder: RNNEncoder, decoder: AttentionDecoder):
        super().__init__()
        self.embedding = embedding
        self.encoder = encoder
        self.decoder = decoder
        self.bridge = nn.Linear(encoder.num_directions * encoder.hidden_size, decoder.hidden_size)

    def encode(self, source_ids: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> DecoderState:
        """Read (batch, time) source ids; the decoder's initial state."""
        states, final = self.encoder(self.embedding(source_ids), lengths)  # (batch, time, key_dim)
        h = final[0] if isinstance(final, tuple) else final  # (layers * directions, batch, hidden)
        layers, directions = self.encoder.num_layers, self.encoder.num_directions
        h = h.view(layers, directions, h.shape[1], h.shape[2]).permute(0, 2, 1, 3).reshape(layers, h.shape[1], -1)
        initial = torch.tanh(self.bridge(h)).contiguous()  # (layers, batch, decoder hidden)
        rnn_state = (initial, torch.zeros_like(initial)) if self.decoder.cell == "lstm" else initial
        mask = torch.ones(source_ids.shape, dtype=torch.bool, device=source_ids.device)
        if lengths is not None:
            mask = torch.arange(source_ids.shape[1], device=source_ids.device) < lengths.to(source_ids.device)[:, None]
        feed = states.new_zeros(states.shape[0], self.decoder.hidden_size)
        return DecoderState(rnn_state, feed, states, self.decoder.attention.keys(states), mask)

    def forward(self, source_ids: torch.Tensor, lengths: Optional[torch.Tensor], target_inputs: torch.Tensor, teacher_forcing: float = 1.0) -> torch.Tensor:
        """(batch, target_time) next-token logits (batch, target_time, vocab) for ``target_inputs``
        (``<eos> y1 ... yn``). At each step after the first, each row is fed the gold previous
        token with probability ``teacher_forcing``, else its own most likely prediction.
        Without input feeding, full teacher forcing runs every step at once."""
        state = self.encode(source_ids, lengths)
        if teacher_forcing >= 1.0 and not self.decoder.input_feeding:
            return self.decoder.teacher_forced(target_inputs, state)
        tokens, outputs = target_inputs[:, 0], []
        for position in range(target_inputs.shape[1]):
            logits, state, _ = self.decoder.step(tokens, state)
            outputs.append(logits)
            if position + 1 < target_inputs.shape[1]:
                tokens = target_inputs[:, position + 1]
                if teacher_forcing < 1.0:
                    own = torch.rand(tokens.shape, device=tokens.device) >= teacher_forcing
                    tokens = torch.where(own, logits.argmax(-1), tokens)
        return torch.stack(outputs, dim=1)


class EnsembleState(NamedTuple):
    """Each member's ``DecoderState``; ``select`` picks the same rows of every one (beam search)."""

    members: tuple[DecoderState, ...]

    def select(self, rows: torch.Tensor) -> EnsembleState:
        return EnsembleState(tuple(state.select(rows) for state in self.members))


class Seq2SeqEnsemble(nn.Module):
    """Several seq2seq models that decode as one: at each step the next token's distribution
    is the mean of the members' (their probabilities averaged, not their scores), and
    greedy or beam search runs over that mean as over one model's. The members must read
    and write the same vocabularies (``api.Seq2Seq.ensemble`` checks); each keeps its own
    encoding and decoder state. It has the interface decoding uses (``encode`` and
    ``decoder.step``), not ``forward``: it is for inference, not training.

    Args:
        members: the ``Seq2SeqModel`` instances, in any order (the mean does not depend on it).
    """

    def __init__(self, members: list[Seq2SeqModel]):
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def decoder(self) -> Seq2SeqEnsemble:
        """What decoding calls ``decoder.step`` on: the ensemble itself."""
        return self

    def encode(self, source_ids: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> EnsembleState:
        return EnsembleState(tuple(member.encode(source_ids, lengths) for member in self.members))

    def step(self, tokens: torch.Tensor, state: EnsembleState) -> tuple[torch.Tensor, EnsembleState, torch.Tensor]:
        """(batch,) previous tokens -> the log of the mean next-token probability (batch, vocab),
        the members' new states, and their mean attention weights."""
        log_probs, states, weights = [], [], []
        for member, member_state in zip(self.members, state.members):
            logits, new_state, attention = member.decoder.step(tokens, member_state)
            log_probs.append(logits.float().log_softmax(-1))
            states.append(new_state)
            weights.append(attention)
        mixed = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))
        return mixed, EnsembleState(tuple(states)), torch.stack(weights).mean(0)


def build_model(
    task: str, config: ModelConfig, vocab_size: Optional[int], pad_id: int = 0, labels: Optional[LabelSet | Targets | Tokenizer] = None
) -> SequenceModel | ConditionedGenerator | Seq2SeqModel:
    """Build the model a recipe describes.

    Args:
        task: the recipe's task (decides the head).
        config: the recipe's ``model`` section.
        vocab_size: the tokenizer's vocabulary size; ``None`` for vector inputs
            (``config.input_size`` numbers per step, no embedding).
        pad_id: the tokenizer's padding id.
        labels: the tags (tagging), classes (classification) or conditions (generation),
            the targets (regression), or the target tokenizer (seq2seq).
    """
    embedding = _build_input(config, vocab_size, pad_id)
    conditioned = task == "generation" and labels is not None and len(labels.labels) > 0 and config.condition in ("input", "both")
    encoder = RNNEncoder(
        input_size=embedding.output_dim + (config.condition_dim if conditioned else 0),
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        cell=config.encoder,
        nonlinearity=config.nonlinearity,
        bidirectional=config.bidirectional,
        dropout=dropout_rate(config, "layer"),
        weight_drop=config.weight_drop,
        locked_dropout=config.locked_dropout,
    )
    head = _build_head(task, config, embedding, encoder, vocab_size, pad_id, labels)
    if task == "seq2seq":
        return Seq2SeqModel(embedding, encoder, _build_decoder(config, encoder, labels))
    if task == "generation":
        num_conditions = len(labels.labels) if isinstance(labels, LabelSet) else 0
        return ConditionedGenerator(embedding, encoder, head, num_conditions, config.condition_dim, config.condition)
    return SequenceModel(embedding, encoder, head)


def _build_input(config: ModelConfig, vocab_size: Optional[int], pad_id: int) -> TokenEmbedding | VectorInput:
    """The model's input layer: token embeddings (with character features, if the recipe
    asks), or for vector inputs (``vocab_size`` None) the vectors as they are."""
    if vocab_size is None:
        if config.input_size is None:
            raise ValueError("a model without a vocabulary reads vectors: set model.input_size")
        return VectorInput(config.input_size, dropout=dropout_rate(config, "input"))
    char_features = None
    if config.char_features != "none":
        char_features = CharFeatures(config.char_features, config.char_embedding_dim, config.char_hidden_size, config.dropout)
    return TokenEmbedding(vocab_size, config.embedding_dim, padding_idx=pad_id, dropout=dropout_rate(config, "input"), char_features=char_features,
                          embedding_dropout=config.embedding_dropout, locked_dropout=config.locked_dropout)  # fmt: skip


def dropout_rate(config: ModelConfig, where: str) -> float:
    """The dropout on the encoder's inputs (``input``), between its layers (``layer``) or
    on its outputs, before the head (``output``): ``model.input_dropout`` and friends, each
    ``model.dropout`` where null."""
    rate = getattr(config, f"{where}_dropout")
    return config.dropout if rate is None else rate


def _build_head(
    task: str,
    config: ModelConfig,
    embedding: TokenEmbedding | VectorInput,
    encoder: RNNEncoder,
    vocab_size: Optional[int],
    pad_id: int,
    labels: Optional[LabelSet | Targets | Tokenizer],
) -> Optional[nn.Module]:
    """The task's head over the encoder's outputs; None for seq2seq (its decoder predicts the tokens)."""
    if task == "seq2seq":
        return None
    if task in ("language_model", "generation"):
        return LanguageModelHead(
            encoder.output_dim,
            vocab_size,
            pad_id=pad_id,
            dropout=dropout_rate(config, "output"),
            tied_embedding=embedding.weight if config.tie_weights else None,
            cutoffs=adaptive_cutoffs(config, vocab_size) if config.output == "adaptive" else (),
            locked_dropout=config.locked_dropout,
        )
    if task == "tagging":
        if not isinstance(labels, LabelSet):
            raise ValueError("a tagging model needs its labels")
        allowed, can_start, can_end = allowed_transitions(labels.labels, labels.scheme)
        return TaggingHead(encoder.output_dim, len(labels.labels), dropout_rate(config, "output"), config.crf, allowed, can_start, can_end)
    if task == "classification":
        if not isinstance(labels, LabelSet):
            raise ValueError("a classifier needs its classes")
        return ClassificationHead(encoder.output_dim, len(labels.labels), config.pooling, config.bidirectional, dropout_rate(config, "output"))
    if task == "regression":
        if not isinstance(labels, Targets):
            raise ValueError("a regression model needs its targets")
        return RegressionHead(encoder.output_dim, len(labels.names), config.pooling, config.bidirectional, dropout_rate(config, "output"))
    raise ValueError(f"no head for task {task!r}")


def _build_decoder(config: ModelConfig, encoder: RNNEncoder, labels: Optional[LabelSet | Targets | Tokenizer]) -> AttentionDecoder:
    """A seq2seq model's decoder, attending over ``encoder``'s states, writing the target tokenizer's (``labels``) ids."""
    if not isinstance(labels, Tokenizer):
        raise ValueError("a seq2seq model needs its target tokenizer")
    return AttentionDecoder(labels.get_vocab_size(), config.embedding_dim, config.hidden_size, config.num_layers, config.encoder,
                            encoder.output_dim, config.attention, config.dropout, special_ids(labels).pad, config.input_feeding)  # fmt: skip


def adaptive_cutoffs(config: ModelConfig, vocab_size: int) -> list[int]:
    """Where an adaptive softmax cuts the vocabulary (``LanguageModelHead``): the recipe's
    ``model.adaptive_cutoffs``, or by default at 64, 256, 1,024, ... (each four times the
    one before) while the last cluster keeps at least half the vocabulary after it: for
    Moby-Dick's 16,439 words ``[64, 256, 1024, 4096]``. On that corpus small, geometric
    clusters gave lower perplexity than a large shortlist (and than a full softmax), and
    cost least.

    Raises:
        RecipeError: cutoffs that do not fit the vocabulary.
    """
    if config.adaptive_cutoffs is not None:
        if config.adaptive_cutoffs[-1] >= vocab_size:
            raise RecipeError([f"model.adaptive_cutoffs: {config.adaptive_cutoffs} must stay below the vocabulary size, {vocab_size:,}"])
        return list(config.adaptive_cutoffs)
    cutoffs = list(itertools.takewhile(lambda cutoff: 2 * cutoff <= vocab_size, (64 * 4**power for power in itertools.count())))
    if not cutoffs:
        raise RecipeError([f"model.output: adaptive: a vocabulary of {vocab_size} tokens is too small to cut (128 or more); use softmax"])
    return cutoffs


def recurrent_cells(config: ModelConfig) -> set[str]:
    """The recurrent cells a model of this config runs: its encoder's, and an LSTM for
    character features read by one."""
    return {config.encoder} | ({"lstm"} if config.char_features == "lstm" else set())


def count_parameters(model: nn.Module) -> int:
    """Number of distinct trainable values (tied weights counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())
