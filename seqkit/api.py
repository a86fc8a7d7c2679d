"""The Python API: load a trained checkpoint and use it.

::

    lm = seqkit.LanguageModel.from_pretrained("runs/lm/best")
    lm.generate("the whale", max_tokens=30, temperature=0.8, top_k=40, seed=1)
    lm.evaluate("data/moby-dick/test.txt")["perplexity"]
    seqkit.load("runs/lm/best")          # the right class for the checkpoint's task
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch
from tokenizers import Tokenizer

from .checkpoint import load_checkpoint, save_checkpoint
from .config import Recipe
from .decoding import generate_text
from .model import SequenceModel
from .runtime import resolve_device
from .tasks import evaluate_language_model_file


class Pretrained:
    """What every task's API class shares: a model, its recipe and tokenizer, on a device."""

    task: str = ""

    def __init__(self, model: SequenceModel, recipe: Recipe, tokenizer: Tokenizer):
        self.model = model.eval()
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.info: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], device: str = "auto"):
        """Load a checkpoint directory (``runs/NAME/best`` or ``last``).

        Args:
            path: the checkpoint directory.
            device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
        """
        model, recipe, tokenizer, info = load_checkpoint(path, resolve_device(device))
        if cls.task and recipe.task != cls.task:
            raise TypeError(f"{path} holds a {recipe.task} checkpoint; load it with seqkit.load() or {_API[recipe.task].__name__}")
        loaded = _API[recipe.task](model, recipe, tokenizer)
        loaded.info = info
        return loaded

    def save_pretrained(self, directory: Union[str, Path]) -> Path:
        """Write this model as a checkpoint directory that ``from_pretrained`` reads."""
        return save_checkpoint(directory, self.model, self.recipe, self.tokenizer, self.info)

    def __repr__(self) -> str:
        m = self.recipe.model
        return f"{type(self).__name__}({m.encoder} {m.num_layers}x{m.hidden_size}, vocabulary {self.tokenizer.get_vocab_size():,}, on {self.device})"


class LanguageModel(Pretrained):
    """A trained language model: generate text, score text."""

    task = "language_model"

    def generate(
        self,
        prompt: str = "",
        *,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
        num: Optional[int] = None,
    ) -> Union[str, list[str]]:
        """Continue a prompt by sampling.

        Settings left as ``None`` come from the recipe's ``generate`` section. The same
        seed gives the same text.

        Returns:
            The prompt and its continuation; a list of ``num`` texts when ``num`` is given.
        """
        defaults = self.recipe.generate
        texts = generate_text(
            self.model,
            self.tokenizer,
            prompt,
            max_tokens if max_tokens is not None else defaults.max_tokens,
            temperature=temperature if temperature is not None else defaults.temperature,
            top_k=top_k if top_k is not None else defaults.top_k,
            top_p=top_p if top_p is not None else defaults.top_p,
            num=num or 1,
            seed=seed,
        )
        return texts if num is not None else texts[0]

    def evaluate(self, path: Union[str, Path], batch_size: int = 10) -> dict[str, Any]:
        """Perplexity on a text file: ``loss``, ``perplexity``, ``tokens``, ``unk_tokens``,
        ``perplexity_no_unk`` (targets that are ``<unk>`` left out)."""
        return evaluate_language_model_file(self.model, self.tokenizer, path, batch_size, self.recipe.train.bptt)


_API: dict[str, type[Pretrained]] = {"language_model": LanguageModel}


def load(path: Union[str, Path], device: str = "auto") -> Pretrained:
    """Load any seqkit checkpoint as the API class of its task."""
    return Pretrained.from_pretrained(path, device)
