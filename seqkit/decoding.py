"""Turning next-token distributions into sequences, for every model that generates (the
language model, the conditioned generator, seq2seq): greedy choice, sampling with
temperature, top-k and top-p (nucleus), and batched beam search with length
normalization; a maximum length, an end token, and a seeded generator so that a seed
gives the same output every time. A language model's text comes as it is generated
(``stream_language_model``), with the prompt exactly as it was typed.

A model takes part through a *step function*: ``step(tokens, state) -> (logits, state)``
maps the (rows,) tokens just chosen and the decoder state to (rows, vocab) next-token
logits and the new state. Beam search also needs ``reorder(state, rows)``, which picks
state rows by index (beams are born, copied and dropped as the search goes).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from tokenizers import Tokenizer

from .model import SequenceModel
from .tokenize import special_ids

Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
Reorder = Callable[[Any, torch.Tensor], Any]

# the range of each generation setting, both ends included (the API, `seqkit generate` and
# a recipe's generate: section check them before any work): finite, and small enough that
# a typo cannot start hours of work or fill the memory
LIMITS: dict[str, tuple[float, float]] = {
    "max_tokens": (1, 100_000),
    "max_length": (1, 100_000),  # a generator's max_tokens
    "temperature": (0.0, 100.0),  # 0: greedy
    "top_k": (1, 1_000_000),
    "top_p": (0.0, 1.0),  # above 0
    "num": (1, 1_000),
    "beam": (1, 100),
    "no_repeat_ngram_size": (0, 100),  # 0: repeats allowed
    "seed": (0, 2**63 - 1),
}
SAMPLING_SETTINGS = ("temperature", "top_k", "top_p")  # what beam search, which samples nothing, refuses
NO_REPEAT_NGRAM_SIZE = 3  # a language model's beam search never repeats a 3-gram, the prompt's included
DETOKENIZER_CONTEXT = 8  # tokens before a new one that its text is decoded with (the space joining them, a split character)


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
def sample_steps(
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
) -> Iterator[torch.Tensor]:
    """Greedy decoding (``temperature`` 0) or sampling, for every row at once, a token at a
    time: yields the (rows,) tokens of each step as soon as they are chosen.

    Args:
        step: the model's step function (module docstring).
        first: (rows,) the token each row starts from (e.g. ``<eos>``); not in the output.
        state: the decoder state before ``first``.
        max_length: the most tokens to generate per row.
        end_id: a row stops when it generates this token; after that its tokens are
            ``end_id`` again, and generation ends when every row has stopped.
        temperature, top_k, top_p: see ``next_token``.
        generator: for sampling; seed it for reproducible output.
        banned_ids: tokens never generated (padding, unknown).
        first_logits: (rows, vocab) logits for the first generated token, when the caller
            has already run the model over a prompt (then ``first`` is not fed again).
    """
    rows = first.shape[0]
    banned = torch.tensor(sorted(set(banned_ids)), dtype=torch.long, device=first.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=first.device)
    logits, tokens = first_logits, first
    for _ in range(max_length):
        if logits is None:
            logits, state = step(tokens, state)
        tokens = next_token(logits.float().index_fill(-1, banned, float("-inf")), temperature, top_k, top_p, generator)
        if end_id is not None:
            tokens = tokens.masked_fill(finished, end_id)
            finished |= tokens == end_id
        yield tokens
        logits = None
        if bool(finished.all()):
            break


def sample(step: Step, first: torch.Tensor, state: Any, max_length: int, *, end_id: Optional[int] = None, **settings: Any) -> list[list[int]]:
    """``sample_steps`` run to the end: each row's generated ids, ``end_id`` left out (the
    keyword arguments are ``sample_steps``'s)."""
    outputs = list(sample_steps(step, first, state, max_length, end_id=end_id, **settings))
    if not outputs:
        return [[] for _ in range(first.shape[0])]
    generated = torch.stack(outputs, dim=1).tolist()
    return [row[: row.index(end_id)] if end_id is not None and end_id in row else row for row in generated]


def repeated_ngram_bans(sequences: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens that would repeat an n-gram of ``size`` tokens: for each row of
    (rows, time) ``sequences``, every token that followed its last ``size - 1`` tokens
    before. Returns ``(rows, tokens)`` index tensors (a row once per token it must not take)."""
    time = sequences.shape[1]
    if size < 1 or time < size - 1 or time == 0:
        empty = torch.empty(0, dtype=torch.long, device=sequences.device)
        return empty, empty
    windows = sequences.unfold(1, size, 1) if time >= size else sequences.new_empty(sequences.shape[0], 0, size)  # (rows, time - size + 1, size)
    # the last size - 1 tokens; a size of 1 bans every token seen
    matches = (windows[:, :, : size - 1] == sequences[:, time - size + 1 :][:, None, :]).all(-1)  # (rows, windows)
    rows, positions = matches.nonzero(as_tuple=True)
    return rows, windows[rows, positions, size - 1]


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
    no_repeat_ngram_size: int = 0,
    prefix: Optional[torch.Tensor] = None,
) -> list[tuple[list[int], float]]:
    """Batched beam search: the ``beam`` best partial sequences of every row, extended a
    token at a time, all rows and beams in one batch.

    With ``no_repeat_ngram_size`` n, a hypothesis never takes a token that would repeat an
    n-gram of its own text: ``prefix`` (rows, time), the tokens before ``first`` (such as
    a prompt), ``first`` and what it generated. Beam search on a language model otherwise
    loops on its likeliest phrase to the length limit.

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
    before = torch.cat([prefix, first[:, None]], dim=1) if prefix is not None else first[:, None]
    before = before.index_select(0, origin)  # (rows * beam, time): what each hypothesis read before its first token
    for _ in range(max_length):
        logits, state = step(tokens, state)
        seen = torch.cat([before, history], dim=1) if no_repeat_ngram_size else None  # each hypothesis's text so far
        log_probs = _step_log_probs(logits, banned, finished, end_id, seen, no_repeat_ngram_size)
        scores, parent, tokens = _extend_beams(scores, log_probs)
        state = reorder(state, parent)
        was_finished = finished.index_select(0, parent)
        lengths = lengths.index_select(0, parent) + (~was_finished).float()
        history = torch.cat([history.index_select(0, parent), tokens[:, None]], dim=1)
        finished = was_finished | (tokens == end_id if end_id is not None else torch.zeros_like(was_finished))
        if bool(finished.all()):
            break
    return _best_hypotheses(scores, lengths, history, end_id, length_penalty)


def _step_log_probs(
    logits: torch.Tensor, banned: torch.Tensor, finished: torch.Tensor, end_id: Optional[int], sequences: Optional[torch.Tensor], no_repeat_ngram_size: int
) -> torch.Tensor:
    """(rows * beam, vocab) log-probabilities of each hypothesis's next token: ``banned``
    tokens and (with ``no_repeat_ngram_size``) those that would repeat an n-gram of its
    ``sequences`` impossible; a ``finished`` one may only "continue" with ``end_id``, at no cost."""
    log_probs = logits.float().index_fill(-1, banned, float("-inf")).log_softmax(-1)
    if no_repeat_ngram_size:
        hypotheses, repeats = repeated_ngram_bans(sequences, no_repeat_ngram_size)
        log_probs[hypotheses, repeats] = float("-inf")
    if end_id is not None:
        frozen = torch.full_like(log_probs, float("-inf"))
        frozen[:, end_id] = 0.0
        log_probs = torch.where(finished[:, None], frozen, log_probs)
    return log_probs


def _extend_beams(scores: torch.Tensor, log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``beam`` best one-token extensions of each row's (rows, beam) hypotheses, on total
    log-probability: their scores (rows, beam), and per new hypothesis (rows * beam) the
    index of the hypothesis it extends and the token it adds."""
    rows, beam = scores.shape
    vocab = log_probs.shape[-1]
    candidates = (scores.reshape(-1, 1) + log_probs).reshape(rows, beam * vocab)
    scores, picked = candidates.topk(beam, dim=-1)  # (rows, beam)
    parent = (picked // vocab + torch.arange(rows, device=scores.device)[:, None] * beam).reshape(-1)
    return scores, parent, (picked % vocab).reshape(-1)


def _best_hypotheses(
    scores: torch.Tensor, lengths: torch.Tensor, history: torch.Tensor, end_id: Optional[int], length_penalty: float
) -> list[tuple[list[int], float]]:
    """Per row, the hypothesis with the best length-normalized score: its tokens (without
    the end token) and that score."""
    rows, beam = scores.shape
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


class Detokenizer:
    """Token ids to text a piece at a time, as they are generated: the pieces joined are
    the text the tokenizer's decoder gives for all the ids (words joined by spaces, BPE
    bytes, characters), each ``<eos>`` a line break.

    A new token is decoded with the few tokens before it (``context``, e.g. the prompt's),
    and its piece is what that adds: the space a word-level tokenizer puts between words,
    nothing for characters. A piece that ends in half a character (byte-level BPE) waits
    for the token that completes it.
    """

    def __init__(self, tokenizer: Tokenizer, context: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.token_to_id("<eos>")
        self.ids = list(context[-DETOKENIZER_CONTEXT:])
        self.start = 0  # ids[start:read] were decoded already: the context of what follows
        self.read = len(self.ids)

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)  # an <unk> in the context still takes its place

    def push(self, token_id: int) -> str:
        """The text ``token_id`` adds (maybe empty, while a character is incomplete)."""
        if token_id == self.eos_id:  # a new paragraph: a line break, and no space joins it to the last
            held = self.flush()
            self.ids, self.start, self.read = [], 0, 0
            return held + "\n"
        self.ids.append(token_id)
        known, text = self._text(self.ids[self.start : self.read]), self._text(self.ids[self.start :])
        if len(text) <= len(known) or text.endswith("\ufffd"):
            return ""
        self._advance()
        return text[len(known) :]

    def flush(self) -> str:
        """The text still held back (half a character at the end of the output)."""
        known, text = self._text(self.ids[self.start : self.read]), self._text(self.ids[self.start :])
        self._advance()
        return text[len(known) :]

    def _advance(self) -> None:
        """All ids are decoded: the ones read since the last piece become the context."""
        self.ids = self.ids[self.read :]
        self.start, self.read = 0, len(self.ids)


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
    steps = sample_language_model_steps(model, prompt_ids, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                        num=num, seed=seed, banned_ids=banned_ids)  # fmt: skip
    outputs = [tokens.tolist() for tokens in steps]
    return [list(row) for row in zip(*outputs)] if outputs else [[] for _ in range(num)]


@torch.inference_mode()
def sample_language_model_steps(
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
) -> Iterator[torch.Tensor]:
    """``sample_language_model`` a step at a time: yields the (num,) tokens of each step."""
    model.eval()
    device = next(model.parameters()).device
    token_ids = torch.tensor([prompt_ids] * num, dtype=torch.long, device=device)  # (num, prompt)
    logits, state = model(token_ids)

    def step(tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        logits, state = model(tokens[:, None], state=state)
        return logits[:, -1], state

    yield from sample_steps(
        step, token_ids[:, -1], state, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        generator=seeded_generator(device, seed), banned_ids=banned_ids, first_logits=logits[:, -1],
    )  # fmt: skip


def stream_language_model(
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
    no_repeat_ngram_size: int = NO_REPEAT_NGRAM_SIZE,
) -> Iterator[tuple[int, str]]:
    """Continue ``prompt`` ``num`` times by sampling, or once by beam search of width
    ``beam``, yielding ``(text index, piece)`` as the text is generated: first the prompt,
    exactly as given, then the continuation a token at a time (beam search: all of it when
    the search ends). The pieces of a text joined are the text.

    Generation starts after an ``<eos>``, as a new paragraph would; ``<pad>`` and
    ``<unk>`` are never generated, and each generated ``<eos>`` becomes a line break.
    Sampling writes ``max_tokens`` tokens; beam search ends with the paragraph (the
    ``<eos>`` the model learned after each line of its training text) or at
    ``max_tokens``, never repeating an n-gram of ``no_repeat_ngram_size`` tokens (0: it may).
    """
    ids = special_ids(tokenizer)
    prompt_ids = tokenizer.encode(prompt).ids if prompt else []
    context = [ids.eos, *prompt_ids]
    rows = 1 if beam else num
    detokenizers = [Detokenizer(tokenizer, prompt_ids) for _ in range(rows)]
    space_after_prompt = prompt[-1:].isspace()  # the prompt's own whitespace joins it to the continuation
    if prompt:
        for row in range(rows):
            yield row, prompt
    if beam:
        steps: Iterable[list[int]] = ([token] for token in beam_language_model(
            model, context, max_tokens, beam, ids.eos, (ids.pad, ids.unk), no_repeat_ngram_size=no_repeat_ngram_size))  # fmt: skip
    else:
        steps = (tokens.tolist() for tokens in sample_language_model_steps(
            model, context, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, num=num, seed=seed,
            banned_ids=(ids.pad, ids.unk)))  # fmt: skip
    started = [not space_after_prompt] * rows
    for tokens in steps:
        for row, token in enumerate(tokens):
            piece = detokenizers[row].push(token)
            if not started[row]:
                piece = piece.lstrip(" ")
                started[row] = bool(piece)
            if piece:
                yield row, piece
    for row, detokenizer in enumerate(detokenizers):
        piece = detokenizer.flush()
        if piece:
            yield row, piece


def generate_text(model: SequenceModel, tokenizer: Tokenizer, prompt: str = "", max_tokens: int = 50, **settings: Any) -> list[str]:
    """``stream_language_model`` run to the end: each text whole, starting with the prompt
    as given (the keyword arguments are ``stream_language_model``'s)."""
    rows = 1 if settings.get("beam") else settings.get("num", 1)
    texts = [[] for _ in range(rows)]
    for row, piece in stream_language_model(model, tokenizer, prompt, max_tokens, **settings):
        texts[row].append(piece)
    return ["".join(pieces) for pieces in texts]


@torch.inference_mode()
def beam_language_model(model: SequenceModel, context: list[int], max_tokens: int, beam: int, end_id: int, banned_ids: Iterable[int] = (),
                        *, no_repeat_ngram_size: int = 0) -> list[int]:  # fmt: skip
    """The most likely continuation of ``context`` (beam search) up to ``end_id``, which is
    left out, or ``max_tokens``; with ``no_repeat_ngram_size``, one that never repeats an
    n-gram of that many tokens (the context's included)."""
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
    prefix = torch.tensor([context[:-1]], dtype=torch.long, device=device)
    [(best, _)] = beam_search(step, first, state, reorder_rnn_state, max_tokens, beam=beam, end_id=end_id, banned_ids=banned_ids,
                              no_repeat_ngram_size=no_repeat_ngram_size, prefix=prefix)  # fmt: skip
    return best


def check_settings(**settings: Any) -> None:
    """A ``ValueError`` naming the first generation setting outside ``LIMITS``; ``None``
    means the default. Types are the caller's to check."""
    for name, value in settings.items():
        if value is None or name not in LIMITS:
            continue
        low, high = LIMITS[name]
        # NaN fails every comparison; an int too large for a float compares exactly
        if not (low < value <= high if name == "top_p" else low <= value <= high):
            if name == "top_p":
                rule = "a number in (0, 1]"
            elif isinstance(low, float):
                rule = f"a finite number from {low:g} to {high:g}"
            else:
                rule = f"an integer from {low:,} to {high:,}"
            raise ValueError(f"{name}: expected {rule}, not {value!r}")
