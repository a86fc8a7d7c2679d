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
from .encoders import CharFeatures, RNNEncoder, State, TokenEmbedding
from .heads import LanguageModelHead, TaggingHead
from .labels import LabelSet, allowed_transitions


class SequenceModel(nn.Module):
    """Embedding, packed recurrent encoder and task head, composed.

    Args:
        embedding: token ids -> vectors (has ``output_dim``).
        encoder: vectors -> states (has ``output_dim``).
        head: states -> task outputs (see ``heads.Head``).
    """

    def __init__(self, embedding: TokenEmbedding, encoder: RNNEncoder, head: nn.Module):
        super().__init__()
        self.embedding = embedding
        self.encoder = encoder
        self.head = head

    def forward(
        self,
        token_ids: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        state: Optional[State] = None,
        char_ids: Optional[torch.Tensor] = None,
        char_index: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, State]:
        """Run the model on a padded batch.

        Args:
            token_ids: (batch, time) ids.
            lengths: (batch,) real lengths, or ``None`` when no sequence is padded.
            state: the encoder's initial state (``RNNEncoder.forward``), or ``None``.
            char_ids, char_index: the words' bytes, for models with character features
                (``CharFeatures.forward``).

        Returns:
            The head's outputs (a language model's: (batch, time, vocab_size) logits) and
            the encoder's final state.
        """
        vectors = self.embedding(token_ids, char_ids, char_index)  # (batch, time, embedding output_dim)
        states, final_state = self.encoder(vectors, lengths, state)  # (batch, time, directions * hidden)
        mask = None
        if lengths is not None:
            mask = torch.arange(token_ids.shape[1], device=token_ids.device) < lengths.to(token_ids.device)[:, None]
        return self.head(states, mask), final_state


def build_model(task: str, config: ModelConfig, vocab_size: int, pad_id: int, labels: Optional[LabelSet] = None) -> SequenceModel:
    """Build the model a recipe describes.

    Args:
        task: the recipe's task (decides the head).
        config: the recipe's ``model`` section.
        vocab_size: the tokenizer's vocabulary size.
        pad_id: the tokenizer's padding id.
        labels: the tag vocabulary and its scheme (tagging).
    """
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
        if labels is None:
            raise ValueError("a tagging model needs its labels")
        allowed, can_start, can_end = allowed_transitions(labels.labels, labels.scheme)
        head = TaggingHead(encoder.output_dim, len(labels.labels), config.dropout, config.crf, allowed, can_start, can_end)
    else:
        raise ValueError(f"no head for task {task!r}")
    return SequenceModel(embedding, encoder, head)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct trainable values (tied weights counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())
