"""How sure the tagger is: marginals, span probabilities and k-best sequences against
brute-force enumeration of every tag sequence on tiny random CRFs (with and without the
scheme's constraints, with padding), then ``Doc.scores``, ``Span.score``, ``n_best`` and
the jsonl output of a tiny trained tagger."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import seqkit
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit import crf_kernels
from seqkit.crf import CRF, SpanQuery
from seqkit.data import collate_tagged
from seqkit.heads import TaggingHead
from seqkit.labels import LabelSet, allowed_transitions, bio_to_bioes, convert, spans, tag_problem, tags_for_types
from seqkit.tokenize import special_ids, word_ids
from seqkit.train import train

from conftest import _write_tagger_data

BIO = tags_for_types(["a", "b"], "bio")  # O B-a I-a B-b I-b


def _random_crf(labels: list[str], scheme: str, seed: int) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(len(labels), *allowed_transitions(labels, scheme))
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.normal_()
    return crf.requires_grad_(False)


@torch.no_grad()
def _brute_force(crf: CRF, emissions: torch.Tensor, constrained: bool) -> dict[tuple[int, ...], float]:
    """The probability of every tag path of one sequence (time, tags), from the definition:
    exp(score) over the sum of exp(score) of every path -- every allowed one, with
    ``constrained``."""
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=emissions.shape[0]):
        if constrained and (
            crf.start_penalty[path[0]] < 0 or crf.end_penalty[path[-1]] < 0 or any(crf.transition_penalty[a, b] < 0 for a, b in zip(path, path[1:]))
        ):
            continue
        score = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
        score = score + sum(emissions[t, tag] for t, tag in enumerate(path))
        score = score + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))
        scores[path] = float(score)
    log_z = float(torch.logsumexp(torch.tensor(list(scores.values())), 0))
    return {path: math.exp(score - log_z) for path, score in scores.items()}


def _padded_batch(lengths: list[int], num_tags: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    emissions = torch.randn(len(lengths), max(lengths), num_tags) * 2
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return emissions, mask


@pytest.mark.parametrize("constrained", [False, True])
def test_marginals_match_brute_force_with_padding(constrained):
    lengths = [4, 1, 3]
    crf = _random_crf(BIO, "bio", seed=1)
    emissions, mask = _padded_batch(lengths, len(BIO), seed=2)
    marginals = crf.marginals(emissions, mask, constrained=constrained)
    assert marginals.shape == emissions.shape
    for row, length in enumerate(lengths):
        every = _brute_force(crf, emissions[row, :length], constrained)
        expected = torch.zeros(length, len(BIO))
        for path, probability in every.items():
            expected[torch.arange(length), list(path)] += probability
        assert torch.allclose(marginals[row, :length], expected, atol=1e-5)
        assert torch.allclose(marginals[row, :length].sum(1), torch.ones(length), atol=1e-5)  # a distribution per token
        assert marginals[row, length:].abs().sum() == 0  # padding holds nothing
    if constrained:  # no mass where the scheme forbids: I-a never starts a sentence
        assert marginals[:, 0, BIO.index("I-a")].abs().max() < 1e-6


@pytest.mark.parametrize("constrained", [False, True])
def test_k_best_matches_brute_force_with_padding(constrained):
    lengths = [3, 1, 4]
    crf = _random_crf(BIO, "bio", seed=3)
    emissions, mask = _padded_batch(lengths, len(BIO), seed=4)
    ranked = crf.k_best(emissions, mask, k=7, constrained=constrained)
    decoded = crf.decode(emissions, mask, constrained=constrained)
    for row, length in enumerate(lengths):
        every = _brute_force(crf, emissions[row, :length], constrained)
        expected = sorted(every.items(), key=lambda item: -item[1])[:7]
        assert len(ranked[row]) == min(7, len(every))  # one token: only 5 (or 3 allowed) sequences exist
        assert [probability for _, probability in ranked[row]] == pytest.approx([p for _, p in expected], abs=1e-5)
        assert [tuple(path) for path, _ in ranked[row]] == [path for path, _ in expected]
        assert ranked[row][0][0] == decoded[row]  # the best is Viterbi's
        probabilities = [probability for _, probability in ranked[row]]
        assert probabilities == sorted(probabilities, reverse=True) and all(0 < p <= 1 for p in probabilities)
    if constrained:
        for row in ranked:
            for path, _ in row:
                tags = [BIO[tag] for tag in path]
                assert all(tag_problem(before, after, "bio") is None for before, after in zip(["O", *tags], tags))


def test_probability_within_allowed_tags_matches_brute_force():
    lengths = [4, 2]
    crf = _random_crf(BIO, "bio", seed=5)
    emissions, mask = _padded_batch(lengths, len(BIO), seed=6)
    generator = torch.Generator().manual_seed(0)
    allowed = torch.rand(2, 4, len(BIO), generator=generator) < 0.6
    allowed[:, :, 0] = True  # keep O everywhere, so some allowed sequence exists
    for constrained in (False, True):
        log_probabilities = crf.log_prob_within(emissions, mask, allowed, constrained=constrained)
        for row, length in enumerate(lengths):
            every = _brute_force(crf, emissions[row, :length], constrained)
            expected = sum(p for path, p in every.items() if all(allowed[row, t, tag] for t, tag in enumerate(path)))
            assert math.exp(float(log_probabilities[row])) == pytest.approx(expected, abs=1e-5)


def test_softmax_head_scores_are_the_softmax_and_sequences_their_products():
    torch.manual_seed(7)
    head = TaggingHead(input_dim=6, num_tags=4, crf=False)  # plain tags: nothing forbidden
    emissions, mask = _padded_batch([3, 2], 4, seed=8)
    probabilities = emissions.softmax(-1)
    marginals = head.marginals(emissions, mask)
    assert torch.allclose(marginals[0], probabilities[0], atol=1e-6)
    assert torch.allclose(marginals[1, :2], probabilities[1, :2], atol=1e-6)
    ranked = head.k_best(emissions, mask, k=5)
    every = {path: math.prod(float(probabilities[0, t, tag]) for t, tag in enumerate(path)) for path in itertools.product(range(4), repeat=3)}
    expected = sorted(every.items(), key=lambda item: -item[1])[:5]
    assert [(tuple(path), pytest.approx(p, abs=1e-6)) for path, p in ranked[0]] == [(path, p) for path, p in expected]
    assert ranked[0][0][0] == head.decode(emissions, mask)[0]


def test_constrained_softmax_head_renormalizes_over_allowed_sequences():
    """A softmax head under BIO: each sequence's probability is the product of its tokens'
    softmax, divided by the sum of those products over the sequences BIO allows."""
    head = TaggingHead(input_dim=6, num_tags=len(BIO), crf=False, allowed=allowed_transitions(BIO, "bio")[0],
                       can_start=allowed_transitions(BIO, "bio")[1])  # fmt: skip
    emissions, mask = _padded_batch([3, 2], len(BIO), seed=13)
    marginals, ranked = head.marginals(emissions, mask), head.k_best(emissions, mask, k=4)
    for row, length in enumerate([3, 2]):
        log_probabilities = emissions[row, :length].log_softmax(-1)
        products = {path: math.prod(math.exp(float(log_probabilities[t, tag])) for t, tag in enumerate(path))
                    for path in itertools.product(range(len(BIO)), repeat=length)}  # fmt: skip
        valid = {path: p for path, p in products.items() if all(tag_problem(a, b, "bio") is None for a, b in zip(["O", *[BIO[t] for t in path]], [BIO[t] for t in path]))}
        total = sum(valid.values())
        expected = torch.zeros(length, len(BIO))
        for path, p in valid.items():
            expected[torch.arange(length), list(path)] += p / total
        assert torch.allclose(marginals[row, :length], expected, atol=1e-5)
        best = sorted(valid.items(), key=lambda item: -item[1])[:4]
        assert [(tuple(path), pytest.approx(p, abs=1e-5)) for path, p in ranked[row]] == [(path, p / total) for path, p in best]
        assert ranked[row][0][0] == head.decode(emissions, mask)[row]


@pytest.fixture(scope="module")
def bioes_tagger(tmp_path_factory):
    """A tiny CRF tagger on 40 tweets that predicts BIOES and returns BIO (as recipes/ner.yaml does)."""
    recipe = _write_tagger_data(tmp_path_factory.mktemp("confidence"))
    result = train(load_recipe(recipe, ["train.epochs=25", "train.eval_every=null", "model.tag_scheme=bioes"]), quiet=True)
    return seqkit.Tagger.from_pretrained(result.run_dir / "best", device="cpu"), result.run_dir / "best"


TWEET = "@paulwalk It 's the view from where I 'm living for two weeks . Empire State Building = ESB . Pretty bad storm here last evening ."


def test_tagger_gives_token_and_span_scores_and_n_best(bioes_tagger):
    tagger, _ = bioes_tagger
    assert tagger.labels.scheme == "bioes" and tagger.labels.data_scheme == "bio"
    doc = tagger.tag(TWEET, n_best=4)
    assert len(doc.scores) == len(doc.tokens) and all(0 <= score <= 1 + 1e-6 for score in doc.scores)
    assert doc.spans and all(span.score is not None for span in doc.spans)
    start, end, label, text = doc.spans[0]  # still a 4-tuple to unpack
    assert text == doc.text[start:end]
    for span in doc.spans:
        words = [i for i, (first, last) in enumerate(doc.offsets) if first >= span.start and last <= span.end]
        # the span being exactly this entity implies each of its words has its tag
        assert 0 < span.score <= min(doc.scores[i] for i in words) + 1e-6
    assert len(doc.n_best) == 4 and doc.n_best[0][0] == doc.tags
    probabilities = [probability for _, probability in doc.n_best]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    # the best sequence is no more probable than any of its tokens' tags
    assert probabilities[0] <= min(doc.scores) + 1e-6
    for tags, _ in doc.n_best:  # BIO, never broken
        assert all(tag_problem(before, after, "bio") is None for before, after in zip(["O", *tags], tags))
    assert tagger.tag(TWEET).n_best == [] and tagger.tag("").scores == []
    batched = tagger.tag(["Empire State", TWEET, ""], n_best=4)[1]  # padded beside a shorter text: the same
    assert batched.scores == pytest.approx(doc.scores, abs=1e-5) and [s.score for s in batched.spans] == pytest.approx([s.score for s in doc.spans], abs=1e-5)
    assert [tags for tags, _ in batched.n_best] == [tags for tags, _ in doc.n_best]
    with pytest.raises(ValueError, match="n_best"):
        tagger.tag(TWEET, n_best=0)


def test_token_scores_sum_bioes_marginals_into_the_bio_tag(bioes_tagger):
    """A BIO tag's probability is that of either BIOES tag it stands for (B-X: B-X or S-X)."""
    tagger, _ = bioes_tagger
    words = TWEET.split()
    doc = tagger.tag([words])[0]
    model = tagger.model
    batch = collate_tagged([word_ids(tagger.tokenizer, words)], [words], None, special_ids(tagger.tokenizer).pad)
    with torch.no_grad():
        emissions, _ = model(batch.token_ids, batch.lengths, char_ids=batch.char_ids, char_index=batch.char_index)
    marginals = model.head.marginals(emissions, batch.mask)[0]
    labels = tagger.labels.labels
    for position, tag in enumerate(doc.tags):
        if tag == "O":
            expected = marginals[position, labels.index("O")]
        else:
            prefix, label = tag.split("-", 1)
            pair = ("B", "S") if prefix == "B" else ("I", "E")
            expected = sum(marginals[position, labels.index(f"{p}-{label}")] for p in pair)
        assert doc.scores[position] == pytest.approx(float(expected), abs=1e-5)


def test_predict_jsonl_prints_scores(bioes_tagger):
    tagger, best = bioes_tagger
    result = CliRunner().invoke(main, ["predict", str(best), "-", "--format", "jsonl"], input=TWEET + "\n")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    doc = tagger.tag(TWEET)
    assert record["scores"] == pytest.approx(doc.scores) and len(record["scores"]) == len(record["tokens"])
    assert [span["score"] for span in record["spans"]] == pytest.approx([span.score for span in doc.spans])
    assert all(set(span) == {"start", "end", "label", "text", "score"} for span in record["spans"])


def test_scores_false_gives_the_same_tags_and_spans_without_probabilities(bioes_tagger):
    tagger, best = bioes_tagger
    texts = [TWEET, "", "call me ishmael"]
    scored, plain = tagger.tag(texts), tagger.tag(texts, scores=False)
    assert [doc.tags for doc in plain] == [doc.tags for doc in scored]
    assert [tuple(doc.spans) for doc in plain] == [tuple(doc.spans) for doc in scored]
    assert all(doc.scores == [] and all(span.score is None for span in doc.spans) for doc in plain)
    text = CliRunner().invoke(main, ["predict", str(best), "-"], input=TWEET + "\n")  # text output prints no scores, so computes none
    assert text.exit_code == 0 and text.output.strip()


@pytest.fixture(params=["compiled", "numpy"])
def loops(request, monkeypatch):
    """Each test twice: with Numba's compiled loops (where installed) and with NumPy's."""
    if request.param == "numpy":
        monkeypatch.setenv("SEQKIT_NUMBA", "0")
    elif not crf_kernels.available():
        pytest.skip("numba is not installed")
    crf_kernels.available.cache_clear()
    yield request.param
    monkeypatch.undo()
    crf_kernels.available.cache_clear()


def _run_probability(crf: CRF, emissions: torch.Tensor, path: list[int], run: tuple[int, int, int, bool]) -> float:
    """``CRF.posteriors``' probability of one run ``(first, end, next tag, next required)``
    along ``path``, in a batch of one sequence."""
    _, probabilities = crf.posteriors(emissions, np.array([len(path)]), np.array([path]), SpanQuery.of([(0, *run)]))
    return float(probabilities[0])


@pytest.mark.parametrize("model_scheme", ["bio", "bioes"])
def test_span_probability_is_that_of_exactly_this_entity(model_scheme, loops):
    """An entity's score, against every sequence: the sum over those whose spans hold it."""
    labels = LabelSet(tags_for_types(["a", "b"], model_scheme), scheme=model_scheme, data_scheme="bio")
    index = {tag: position for position, tag in enumerate(labels.labels)}
    crf = _random_crf(labels.labels, model_scheme, seed=9)
    length = 4
    emissions, _ = _padded_batch([length], len(labels.labels), seed=10)
    every = _brute_force(crf, emissions[0], constrained=True)
    for first, end, label in [(0, 1, "a"), (1, 3, "b"), (2, 4, "a"), (3, 4, "b"), (0, 4, "b")]:
        # the path holds the entity as the model's scheme writes it; the tags around it do not matter
        inner = [f"B-{label}"] + [f"I-{label}"] * (end - first - 1)
        if model_scheme == "bioes":
            inner = [f"S-{label}"] if end - first == 1 else [*inner[:-1], f"E-{label}"]
        path = [0] * first + [index[tag] for tag in inner] + [0] * (length - end)
        got = _run_probability(crf, emissions, path, (first, end, index[f"I-{label}"] if model_scheme == "bio" else -1, False))
        expected = sum(p for path, p in every.items() if (first, end, label) in spans(convert([labels.labels[t] for t in path], model_scheme, "bio")))
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)  # the brute force adds in float32


def test_bioes_tag_probability_from_a_bio_model_matches_brute_force(loops):
    """A BIO model returning BIOES tags: S-X at a token is B-X there and no I-X after it."""
    index = {tag: position for position, tag in enumerate(BIO)}
    crf = _random_crf(BIO, "bio", seed=11)
    length = 3
    emissions, _ = _padded_batch([length], len(BIO), seed=12)
    every = _brute_force(crf, emissions[0], constrained=True)
    for path in list(every)[::7]:
        for position, tag in enumerate(bio_to_bioes([BIO[t] for t in path])):
            prefix, label = tag.split("-")[0], tag[2:]
            run = (position, position + 1, index[f"I-{label}"] if prefix != "O" else -1, prefix in ("B", "I"))
            got = _run_probability(crf, emissions, list(path), run)
            expected = sum(p for other, p in every.items() if bio_to_bioes([BIO[t] for t in other])[position] == tag)
            assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)  # the brute force adds in float32
