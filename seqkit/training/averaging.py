"""Averaged weights for evaluation and the saved model (``train.average``).

``uniform`` is the plain mean of the weights after every optimizer step from step
``train.average_start`` on (what NT-ASGD's switch to averaged SGD computes, Merity et al.
2017; Polyak averaging); ``ema`` an exponential moving average with ``train.average_decay``.
Training keeps stepping the raw weights; evaluation, ``best/`` and ``last/model.safetensors``
see the averaged ones (``applied``), and ``last/trainer_state.pt`` keeps the raw weights
beside them (``state_dict``), so ``--resume`` continues both exactly.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch


class WeightAverage:
    """The running average of a model's parameters (tied ones once).

    Args:
        kind: ``none``, ``uniform`` or ``ema``.
        start: optimizer steps made before averaging starts (the first average is the
            weights after step ``start + 1``).
        decay: ``ema``: the average's weight at each step.
    """

    def __init__(self, kind: str = "none", start: int = 0, decay: float = 0.999):
        if kind not in ("none", "uniform", "ema"):
            raise ValueError(f"unknown average {kind!r}: use none, uniform or ema")
        self.kind, self.start, self.decay = kind, start, decay
        self.count = 0  # steps averaged so far
        self.tensors: Optional[list[torch.Tensor]] = None
        self._raw: Optional[list[torch.Tensor]] = None  # the raw weights while the average is applied

    @property
    def active(self) -> bool:
        return self.count > 0

    def update(self, model: torch.nn.Module, steps_made: int) -> None:
        """After an optimizer step: fold the model's weights in (``steps_made``: steps so far)."""
        if self.kind == "none" or steps_made <= self.start:
            return
        weights = [parameter.detach() for parameter in model.parameters()]
        if self.tensors is None:
            self.tensors, self.count = [weight.clone() for weight in weights], 1
            return
        self.count += 1
        share = 1.0 / self.count if self.kind == "uniform" else 1.0 - self.decay
        torch._foreach_lerp_(self.tensors, weights, share)  # average += share * (weights - average)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """The averaged weights in the model for the block (evaluation, saving); the raw ones after it."""
        if not self.active or self._raw is not None:  # nothing averaged yet, or applied already
            yield
            return
        parameters = list(model.parameters())
        with torch.no_grad():
            self._raw = [parameter.detach().clone() for parameter in parameters]
            torch._foreach_copy_(parameters, self.tensors)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(parameters, self._raw)
            self._raw = None

    def state_dict(self) -> Optional[dict[str, Any]]:
        """What ``last/trainer_state.pt`` keeps, called while ``applied`` (the averaged
        weights are ``last/model.safetensors``): the count and the raw weights. ``None``
        before averaging starts (the weights saved are the raw ones)."""
        if not self.active:
            return None
        if self._raw is None:
            raise RuntimeError("WeightAverage.state_dict is taken inside applied(), while the model holds the average")
        return {"count": self.count, "raw": [tensor.cpu() for tensor in self._raw]}

    def load_state_dict(self, model: torch.nn.Module, state: Optional[dict[str, Any]]) -> None:
        """``--resume``: the model holds ``last/``'s averaged weights; take them as the
        average and put the raw weights back in the model."""
        if state is None:
            return
        parameters = list(model.parameters())
        self.tensors = [parameter.detach().clone() for parameter in parameters]
        self.count = state["count"]
        with torch.no_grad():
            torch._foreach_copy_(parameters, [tensor.to(parameter.device) for tensor, parameter in zip(state["raw"], parameters)])
