"""Language modeling: next-token prediction over a token stream (many-to-many)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from tokenizers import Tokenizer

from ..config import Recipe
from ..data import LMChunk, LMStream, read_text, token_stream
from ..data.streaming import Corpus, StreamedText, epoch_offset, estimate_tokens, estimated_steps, sample_lines, streams
from ..decoding import generate_text
from ..distributed import own_rows, shard_rows
from ..encoders import State
from ..errors import RecipeError
from ..labels import LabelSet
from ..metrics import perplexity
from ..model import SequenceModel
from ..regularize import activation_penalties
from ..runtime import autocast
from ..tokenize import special_ids, tokenizer_for


# evaluation: tokens each row after the first reads before its slice, so that a row's first
# tokens have context (LMStream); with them perplexity hardly changes with the number of rows
EVAL_CONTEXT = 100


class LanguageModelTask:
    """Next-token prediction over a token stream, trained with truncated BPTT.

    The hidden state is carried from one chunk to the next within an epoch, so each
    batch row reads its slice of the corpus as one long text. With ``data.streaming`` the
    training text is read from its files as training goes (``streaming.StreamedText``).
    """

    name = "language_model"
    metric = "perplexity"  # picks best/ and drives early stopping
    higher_is_better = False

    labels: Optional[LabelSet] = None

    @staticmethod
    def make_tokenizer(recipe: Recipe) -> Tokenizer:
        """Train the recipe's tokenizer on the training text (streamed: on ``tokenizer.sample_mb`` of it)."""
        data = recipe.data
        if streams(data.streaming, data.train, data.encoding):
            return tokenizer_for(recipe.tokenizer, sample_lines(data.train, int(recipe.tokenizer.sample_mb * (1 << 20)), data.encoding))
        return tokenizer_for(recipe.tokenizer, read_text(data.train, data.input_field, data.encoding)["text"])

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, labels: Optional[LabelSet] = None):
        self.recipe = recipe
        self.tokenizer = tokenizer
        ids = special_ids(tokenizer)
        self.pad_id, self.unk_id = ids.pad, ids.unk
        data = recipe.data
        self.corpus = Corpus(data.train, data.encoding) if streams(data.streaming, data.train, data.encoding) else None
        self.train_stream = token_stream(data.train, tokenizer, data.input_field, data.encoding) if self.corpus is None else None
        self.train_tokens = len(self.train_stream) if self.corpus is None else estimate_tokens(self.corpus, tokenizer)
        self.streams = {"valid": token_stream(data.valid, tokenizer, data.input_field, data.encoding)}

    def summary(self) -> str:
        train = f"train {self.train_tokens:,} tokens"
        if self.corpus is not None:
            train = f"train streamed from {len(self.corpus.files)} file(s), {self.corpus.size / 1e6:,.1f} MB, about {self.train_tokens:,} tokens"
        return f"{train}, valid {len(self.streams['valid']):,} tokens, vocabulary {self.tokenizer.get_vocab_size():,}"

    def train_batches(self, epoch: int, device: torch.device) -> LMStream | StreamedText:
        """The chunks of one epoch, a pure function of (seed, epoch) so that a resumed
        run sees exactly the batches an uninterrupted one would."""
        train = self.recipe.train
        # shift the chunk boundaries each epoch so every split point of the text is seen
        offset = epoch_offset(self.recipe.seed, epoch, train.bptt)
        variable_seed = (self.recipe.seed, epoch) if train.variable_bptt else None
        if self.corpus is not None:  # DDP: each process reads only its own rows
            if variable_seed is not None:
                raise RecipeError(["train.variable_bptt: streamed text (data.streaming, above 1 GiB with auto) is read in chunks of train.bptt tokens; set data.streaming: false or remove this"])
            offset %= max(1, self.train_tokens // train.batch_size // 2)  # a short text: no row is shifted past its end
            return StreamedText(self.corpus, self.tokenizer, train.batch_size, train.bptt, self.pad_id, offset, own_rows(train.batch_size), device)
        # a text shorter than the shift (a few words) is still read, not skipped: an empty epoch trains nothing
        stream = LMStream(self.train_stream, train.batch_size, train.bptt, self.pad_id, offset % max(1, len(self.train_stream) - 1),
                          variable_seed=variable_seed)  # fmt: skip
        stream.rows = shard_rows(stream.rows)  # DDP: this process's rows of the global batch
        return stream.to(device)

    def steps_per_epoch(self) -> int:
        """Chunks per epoch (streamed: an estimate, from the tokens per byte of a sample)."""
        train = self.recipe.train
        if self.corpus is not None:
            return estimated_steps(self.train_tokens, train.batch_size, train.bptt)
        return len(LMStream(self.train_stream, train.batch_size, train.bptt, self.pad_id, variable_seed=(self.recipe.seed, 0) if train.variable_bptt else None))

    def loss(self, model: SequenceModel, chunk: LMChunk, carry: Optional[State]) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Mean loss of a chunk (plus AR and TAR, ``train.ar_alpha`` / ``train.tar_beta``),
        its number of targets, and the state to carry on."""
        states, _, state = model.encode(chunk.token_ids, state=carry)  # (batch, time, hidden)
        num_targets = (chunk.targets != self.pad_id).sum()
        alpha, beta = self.recipe.train.ar_alpha, self.recipe.train.tar_beta
        if not (alpha or beta) or not model.training:
            nll = model.head.nll(states, chunk.targets)  # (batch, time); an adaptive softmax scores only each target's cluster
            return nll.sum() / num_targets.clamp(min=1), num_targets, state
        dropped = model.head.dropout(states)  # AR reads the outputs the output layer reads; TAR those before dropout
        nll = model.head.nll(dropped, chunk.targets, dropped=True)
        penalty = activation_penalties(dropped, states, alpha, beta)
        return nll.sum() / num_targets.clamp(min=1) + penalty, num_targets, state

    def evaluate(self, model: SequenceModel, precision: str = "fp32", split: str = "valid") -> dict[str, Any]:
        """Metrics on the ``valid`` or ``test`` split of the recipe's data."""
        if split not in self.streams:
            data = self.recipe.data
            self.streams[split] = token_stream(getattr(data, split), self.tokenizer, data.input_field, data.encoding)
        return evaluate_language_model(
            model, self.streams[split], self.recipe.train.eval_batch_size, self.recipe.train.bptt,
            self.pad_id, self.unk_id, precision,
        )  # fmt: skip

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"loss {metrics['loss']:.4f}  perplexity {metrics['perplexity']:.2f}"

    def sample(self, model: SequenceModel) -> str:
        """A text generated with the recipe's ``generate`` settings and seed."""
        settings = self.recipe.generate
        return generate_text(
            model, self.tokenizer, settings.prompt, settings.max_tokens, temperature=settings.temperature,
            top_k=settings.top_k, top_p=settings.top_p, seed=self.recipe.seed,
        )[0]  # fmt: skip


@torch.inference_mode()
def evaluate_language_model(
    model: SequenceModel,
    stream: torch.Tensor,
    batch_size: int,
    bptt: int,
    pad_id: int,
    unk_id: int,
    precision: str = "fp32",
    context: int = EVAL_CONTEXT,
) -> dict[str, Any]:
    """Perplexity of a language model on a token stream, read in ``batch_size`` contiguous
    rows, each after the first starting ``context`` tokens early (``data.LMStream``), so
    that its first tokens are predicted from the text before them. Fewer rows are read
    where the stream is too short for each to score as many tokens as its context holds
    (``batch_size`` 100,000 on 20,000 tokens reads 200 rows, not 100,000 rows of padding).

    Every token of the stream is scored once (none dropped to fill a batch). Returns
    ``loss`` (mean negative log-likelihood, nats), ``perplexity``, ``tokens``, and
    ``unk_tokens`` with ``perplexity_no_unk``: perplexity over the targets that are not
    ``<unk>``, the convention count-based models are compared under.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = min(batch_size, max(1, (len(stream) - 1) // max(context, bptt)))  # a row scores at least its context's length
    chunks = LMStream(stream, rows, bptt, pad_id, context=context).to(device)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # nll, targets, unk nll, unk targets
    state = None
    for chunk in chunks:
        with autocast(device, precision):
            if getattr(model, "runtime", "torch") == "onnx":  # the graph gives the scores (logits, or an adaptive softmax's log-probabilities)
                scores, state = model(chunk.token_ids, state=state)
                nll = -scores.float().log_softmax(-1).gather(-1, chunk.targets.unsqueeze(-1)).flatten()
            else:
                states, _, state = model.encode(chunk.token_ids, state=state)
                nll = model.head.nll(states, chunk.targets).flatten()  # exact: the target's log-probability under the whole distribution
        real = chunk.targets.flatten() != pad_id
        unknown = chunk.targets.flatten() == unk_id
        sums += torch.stack([nll[real].sum(), real.sum(), nll[unknown].sum(), unknown.sum()]).double()
    model.train(was_training)
    total_nll, num_tokens, unk_nll, num_unk = sums.tolist()
    num_tokens, num_unk = int(num_tokens), int(num_unk)
    return {
        "loss": total_nll / max(num_tokens, 1),
        "perplexity": perplexity(total_nll, num_tokens),
        "tokens": num_tokens,
        "unk_tokens": num_unk,
        "perplexity_no_unk": perplexity(total_nll - unk_nll, num_tokens - num_unk),
    }


def evaluate_language_model_file(model: SequenceModel, tokenizer: Tokenizer, path: str | Path, batch_size: int, bptt: int,
                                 encoding: str = "utf-8") -> dict[str, Any]:  # fmt: skip
    """Perplexity of a language model on a text file in ``encoding`` (what ``seqkit eval`` prints)."""
    ids = special_ids(tokenizer)
    return evaluate_language_model(model, token_stream(path, tokenizer, encoding=encoding), batch_size, bptt, ids.pad, ids.unk)
