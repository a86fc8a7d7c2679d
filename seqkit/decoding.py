"""Turning next-token distributions into sequences, for every model that generates (the
language model, the conditioned generator, seq2seq): greedy choice, sampling with
temperature, top-k and top-p (nucleus), and batched beam search with length
normalization; a maximum length, an end token, and a seeded generator so that a seed
gives the same output every time.

A model takes part through a *step function*: ``step(tokens, state) -> (logits, state)``
maps the (rows,) tokens just chosen and the decoder state to (rows, vocab) next-token
logits and the new state. Beam search also needs ``reorder(state, rows)``, which picks
state rows by index (beams are born, copied and dropped as the search goes).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
from tokenizers import Tokenizer

from .model import SequenceModel
from .tokenize import decode, special_ids

Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
Reorder = Callable[[Any, torch.Tensor], Any]


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


def seeded_generator(device: torch.device, seed: Optional[int]) -> torch.Generator:
    """A random generator on ``device``: seeded, or from fresh entropy when ``seed`` is None."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def reorder_rnn_state(state: Any, rows: torch.Tensor) -> Any:
    """Pick rows of an RNN/GRU state (layers, batch, hidden) or of each part of an LSTM's (h, c)."""
    if isinstance(state, tuple):
        return tuple(reorder_rnn_state(part, rows) for part in state)
    return state.index_select(1, rows)


@torch.inference_mode()
def sample(
    step: Step,
    first: torch.Tensor,
    state: Any,
    max_length: int,
    *,
    end_id: Optional[int] = None,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    banned_ids: Iterable[int] = (),
    first_logits: Optional[torch.Tensor] = None,
) -> list[list[int]]:
    """Greedy decoding (``temperature`` 0) or sampling, for every row at once.

    Args:
        step: the model's step function (module docstring).
        first: (rows,) the token each row starts from (e.g. ``<eos>``); not in the output.
        state: the decoder state before ``first``.
        max_length: the most tokens to generate per row.
        end_id: a row stops when it generates this token (left out of its output).
        temperature, top_k, top_p: see ``next_token``.
        generator: for sampling; seed it for reproducible output.
        banned_ids: tokens never generated (padding, unknown).
        first_logits: (rows, vocab) logits for the first generated token, when the caller
            has already run the model over a prompt (then ``first`` is not fed again).

    Returns:
        Each row's generated ids.
    """
    rows = first.shape[0]
    banned = torch.tensor(sorted(set(banned_ids)), dtype=torch.long, device=first.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=first.device)
    outputs: list[torch.Tensor] = []
    logits, tokens = first_logits, first
    for _ in range(max_length):
        if logits is None:
            logits, state = step(tokens, state)
        tokens = next_token(logits.float().index_fill(-1, banned, float("-inf")), temperature, top_k, top_p, generator)
        if end_id is not None:
            tokens = tokens.masked_fill(finished, end_id)
            finished |= tokens == end_id
        outputs.append(tokens)
        logits = None
        if bool(finished.all()):
            break
    if not outputs:
        return [[] for _ in range(rows)]
    generated = torch.stack(outputs, dim=1).tolist()
    return [row[: row.index(end_id)] if end_id is not None and end_id in row else row for row in generated]


@torch.inference_mode()
def beam_search(
    step: Step,
    first: torch.Tensor,
    state: Any,
    reorder: Reorder,
    max_length: int,
    *,
    beam: int = 5,
    end_id: Optional[int] = None,
    length_penalty: float = 1.0,
    banned_ids: Iterable[int] = (),
) -> list[tuple[list[int], float]]:
    """Batched beam search: the ``beam`` best partial sequences of every row, extended a
    token at a time, all rows and beams in one batch.

    A hypothesis ends when it generates ``end_id`` (or reaches ``max_length``); its score
    is its total log-probability (the end token included) divided by ``length **
    length_penalty`` (length: tokens generated, end included), so longer outputs are not
    punished for having more terms. Beams compete on total log-probability while they
    grow; finished ones are ranked by the normalized score. With ``beam=1`` this is
    greedy decoding.

    Returns:
        Per row, the best sequence (without the end token) and its normalized score.
    """
    rows, device = first.shape[0], first.device
    origin = torch.arange(rows, device=device).repeat_interleave(beam)  # beam b of row r sits at r * beam + b
    state = reorder(state, origin)
    tokens = first.index_select(0, origin)
    banned = torch.tensor(sorted(set(banned_ids)), dtype=torch.long, device=device)
    scores = torch.full((rows, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: keep one, or the first step picks copies
    finished = torch.zeros(rows * beam, dtype=torch.bool, device=device)
    lengths = torch.zeros(rows * beam, device=device)
    history = torch.empty(rows * beam, 0, dtype=torch.long, device=device)
    for _ in range(max_length):
        logits, state = step(tokens, state)
        log_probs = logits.float().index_fill(-1, banned, float("-inf")).log_softmax(-1)  # (rows * beam, vocab)
        vocab = log_probs.shape[-1]
        if end_id is not None:  # a finished beam may only "continue" with end, at no cost
            frozen = torch.full_like(log_probs, float("-inf"))
            frozen[:, end_id] = 0.0
            log_probs = torch.where(finished[:, None], frozen, log_probs)
        candidates = (scores.reshape(-1, 1) + log_probs).reshape(rows, beam * vocab)
        scores, picked = candidates.topk(beam, dim=-1)  # (rows, beam)
        parent = (picked // vocab + torch.arange(rows, device=device)[:, None] * beam).reshape(-1)
        tokens = (picked % vocab).reshape(-1)
        state = reorder(state, parent)
        was_finished = finished.index_select(0, parent)
        lengths = lengths.index_select(0, parent) + (~was_finished).float()
        history = torch.cat([history.index_select(0, parent), tokens[:, None]], dim=1)
        finished = was_finished | (tokens == end_id if end_id is not None else torch.zeros_like(was_finished))
        if bool(finished.all()):
            break
    normalized = (scores.reshape(-1) / lengths.clamp(min=1) ** length_penalty).reshape(rows, beam)
    normalized = normalized.masked_fill(~torch.isfinite(scores), float("-inf"))
    best = normalized.argmax(dim=-1)
    results = []
    for row in range(rows):
        index = row * beam + int(best[row])
        sequence = history[index, : int(lengths[index])].tolist()
        if end_id is not None and sequence and sequence[-1] == end_id:
            sequence = sequence[:-1]
        results.append((sequence, float(normalized[row, best[row]])))
    return results


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
    token_ids = torch.tensor([prompt_ids] * num, dtype=torch.long, device=device)  # (num, prompt)
    logits, state = model(token_ids)

    def step(tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        logits, state = model(tokens[:, None], state=state)
        return logits[:, -1], state

    return sample(
        step, token_ids[:, -1], state, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        generator=seeded_generator(device, seed), banned_ids=banned_ids, first_logits=logits[:, -1],
    )  # fmt: skip


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
    beam: Optional[int] = None,
) -> list[str]:
    """Continue ``prompt`` ``num`` times by sampling, or once by beam search of width
    ``beam`` (up to the end of the paragraph, ``<eos>``); each text starts with the prompt.

    Generation starts after an ``<eos>``, as a new paragraph would; ``<pad>`` and
    ``<unk>`` are never generated, and each generated ``<eos>`` becomes a line break.
    """
    ids = special_ids(tokenizer)
    prompt_ids = tokenizer.encode(prompt).ids if prompt else []
    context = [ids.eos, *prompt_ids]
    if beam:
        return [decode(tokenizer, prompt_ids + beam_language_model(model, context, max_tokens, beam, ids.eos, (ids.pad, ids.unk)))]
    generated = sample_language_model(
        model, context, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        num=num, seed=seed, banned_ids=(ids.pad, ids.unk),
    )  # fmt: skip
    return [decode(tokenizer, prompt_ids + continuation) for continuation in generated]


@torch.inference_mode()
def beam_language_model(model: SequenceModel, context: list[int], max_tokens: int, beam: int, end_id: int, banned_ids: Iterable[int] = ()) -> list[int]:
    """The most likely continuation of ``context`` (beam search) up to ``end_id``, which is
    left out, or ``max_tokens``."""
    model.eval()
    device = next(model.parameters()).device
    zeros = torch.zeros(model.encoder.state_shape(1), device=device)
    state = (zeros, zeros.clone()) if model.encoder.cell == "lstm" else zeros
    if len(context) > 1:
        _, state = model(torch.tensor([context[:-1]], device=device), state=state)

    def step(tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        logits, state = model(tokens[:, None], state=state)
        return logits[:, -1], state

    first = torch.tensor([context[-1]], device=device)
    [(best, _)] = beam_search(step, first, state, reorder_rnn_state, max_tokens, beam=beam, end_id=end_id, banned_ids=banned_ids)
    return best
