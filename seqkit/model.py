"""``SequenceModel`` = embedding -> encoder -> head, and ``build_model``: the one place
where a recipe's ``model`` section becomes modules.

Training and loading both call ``build_model``, so a checkpoint is rebuilt from its
``config.yaml`` exactly as it was trained and then filled from ``model.safetensors``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .config import ModelConfig
from .encoders import CharFeatures, RNNEncoder, State, TokenEmbedding, VectorInput
from .heads import ClassificationHead, LanguageModelHead, RegressionHead, TaggingHead
from .labels import LabelSet, Targets, allowed_transitions


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


def build_model(
    task: str, config: ModelConfig, vocab_size: Optional[int], pad_id: int = 0, labels: Optional[LabelSet | Targets] = None
) -> SequenceModel:
    """Build the model a recipe describes.

    Args:
        task: the recipe's task (decides the head).
        config: the recipe's ``model`` section.
        vocab_size: the tokenizer's vocabulary size; ``None`` for vector inputs
            (``config.input_size`` numbers per step, no embedding).
        pad_id: the tokenizer's padding id.
        labels: the tags (tagging) or classes (classification), or the targets (regression).
    """
    if vocab_size is None:
        if config.input_size is None:
            raise ValueError("a model without a vocabulary reads vectors: set model.input_size")
        embedding = VectorInput(config.input_size, dropout=config.dropout)
    else:
        char_features = None
        if config.char_features != "none":
            char_features = CharFeatures(config.char_features, config.char_embedding_dim, config.char_hidden_size, config.dropout)
        embedding = TokenEmbedding(vocab_size, config.embedding_dim, padding_idx=pad_id, dropout=config.dropout, char_features=char_features)
    encoder = RNNEncoder(
        input_size=embedding.output_dim,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        cell=config.encoder,
        nonlinearity=config.nonlinearity,
        bidirectional=config.bidirectional,
        dropout=config.dropout,
    )
    if task == "language_model":
        head = LanguageModelHead(
            encoder.output_dim,
            vocab_size,
            pad_id=pad_id,
            dropout=config.dropout,
            tied_embedding=embedding.weight if config.tie_weights else None,
        )
    elif task == "tagging":
        if not isinstance(labels, LabelSet):
            raise ValueError("a tagging model needs its labels")
        allowed, can_start, can_end = allowed_transitions(labels.labels, labels.scheme)
        head = TaggingHead(encoder.output_dim, len(labels.labels), config.dropout, config.crf, allowed, can_start, can_end)
    elif task == "classification":
        if not isinstance(labels, LabelSet):
            raise ValueError("a classifier needs its classes")
        head = ClassificationHead(encoder.output_dim, len(labels.labels), config.pooling, config.bidirectional, config.dropout)
    elif task == "regression":
        if not isinstance(labels, Targets):
            raise ValueError("a regression model needs its targets")
        head = RegressionHead(encoder.output_dim, len(labels.names), config.pooling, config.bidirectional, config.dropout)
    else:
        raise ValueError(f"no head for task {task!r}")
    return SequenceModel(embedding, encoder, head)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct trainable values (tied weights counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())
