"""Turning next-token distributions into sequences: greedy choice and sampling with
temperature, top-k and top-p (nucleus), with a seeded generator so a seed gives the
same text every time."""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from tokenizers import Tokenizer

from .model import SequenceModel
from .tokenize import decode, special_ids


def filter_logits(logits: torch.Tensor, top_k: Optional[int] = None, top_p: Optional[float] = None) -> torch.Tensor:
    """Set to ``-inf`` every logit outside the top-k and outside the top-p nucleus.

    Args:
        logits: (batch, vocab_size).
        top_k: keep the ``top_k`` most likely tokens.
        top_p: keep the smallest set of most likely tokens whose probability reaches
            ``top_p`` (always at least the most likely one).
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth_best = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens ranked before it already reach top_p
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Pick one token per row of (batch, vocab_size) logits; temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def sample_language_model(
    model: SequenceModel,
    prompt_ids: list[int],
    max_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    num: int = 1,
    seed: Optional[int] = None,
    banned_ids: Iterable[int] = (),
) -> list[list[int]]:
    """Continue a prompt ``num`` times with a language model, in one batch.

    Args:
        model: a language model (``SequenceModel`` with a ``LanguageModelHead``).
        prompt_ids: the prompt's token ids (at least one).
        max_tokens: tokens to generate after the prompt.
        temperature, top_k, top_p: see ``next_token``.
        num: how many continuations.
        seed: seeds the sampler (``None``: nondeterministic).
        banned_ids: tokens never to generate (padding, unknown).

    Returns:
        ``num`` lists of generated ids (the prompt not included).
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    banned = torch.tensor(sorted(set(banned_ids)), dtype=torch.long, device=device)
    token_ids = torch.tensor([prompt_ids] * num, dtype=torch.long, device=device)  # (num, prompt)
    logits, state = model(token_ids)
    generated = []
    for _ in range(max_tokens):
        step_logits = logits[:, -1, :].index_fill(-1, banned, float("-inf"))  # (num, vocab)
        chosen = next_token(step_logits, temperature, top_k, top_p, generator)  # (num,)
        generated.append(chosen)
        logits, state = model(chosen[:, None], state=state)
    return torch.stack(generated, dim=1).tolist() if generated else [[] for _ in range(num)]


def generate_text(
    model: SequenceModel,
    tokenizer: Tokenizer,
    prompt: str = "",
    max_tokens: int = 50,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    num: int = 1,
    seed: Optional[int] = None,
) -> list[str]:
    """Continue ``prompt`` ``num`` times; each text starts with the prompt.

    Generation starts after an ``<eos>``, as a new paragraph would; ``<pad>`` and
    ``<unk>`` are never generated, and each generated ``<eos>`` becomes a line break.
    """
    ids = special_ids(tokenizer)
    prompt_ids = tokenizer.encode(prompt).ids if prompt else []
    generated = sample_language_model(
        model, [ids.eos, *prompt_ids], max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        num=num, seed=seed, banned_ids=(ids.pad, ids.unk),
    )  # fmt: skip
    return [decode(tokenizer, prompt_ids + continuation) for continuation in generated]
