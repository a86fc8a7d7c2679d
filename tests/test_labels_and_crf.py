"""Tag schemes, entity scoring, and the CRF against brute-force enumeration."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from seqkit.crf import CRF
from seqkit.labels import allowed_transitions, bio_to_bioes, bioes_to_bio, spans, tag_problem, tags_for_types
from seqkit.metrics import entity_scores


def test_bio_bioes_round_trip_and_spans_agree():
    bio = ["B-per", "I-per", "O", "B-loc", "B-loc", "I-loc", "I-loc", "O", "B-org"]
    bioes = bio_to_bioes(bio)
    assert bioes == ["B-per", "E-per", "O", "S-loc", "B-loc", "I-loc", "E-loc", "O", "S-org"]
    assert bioes_to_bio(bioes) == bio
    assert spans(bio) == spans(bioes) == [(0, 2, "per"), (3, 4, "loc"), (4, 7, "loc"), (8, 9, "org")]


def test_spans_read_broken_sequences_like_conlleval():
    # an I- after O or after another type starts a new entity; E-/S- close one
    assert spans(["O", "I-per", "I-per", "I-loc", "E-loc", "I-loc"]) == [(1, 3, "per"), (3, 5, "loc"), (5, 6, "loc")]
    assert spans(["S-per", "I-per", "B-per", "O"]) == [(0, 1, "per"), (1, 2, "per"), (2, 3, "per")]


def test_scheme_problems_are_explained():
    assert tag_problem("O", "B-per", "bio") is None
    assert "breaks the bio scheme" in tag_problem("O", "I-per", "bio")
    assert "breaks the bio scheme" in tag_problem("B-loc", "I-per", "bio")
    assert "is not O or B/I-TYPE" in tag_problem("O", "E-per", "bio")
    assert "is not O or B/I/E/S-TYPE" in tag_problem("O", "PER", "bioes")
    assert "must be followed by I-per or E-per" in tag_problem("B-per", "O", "bioes")


@pytest.mark.parametrize("scheme", ["bio", "bioes"])
def test_allowed_transitions_match_tag_problem(scheme):
    labels = tags_for_types(["a", "b"], scheme)
    allowed, can_start, can_end = allowed_transitions(labels, scheme)
    for i, before in enumerate(labels):
        for j, after in enumerate(labels):
            assert allowed[i][j] == (tag_problem(before, after, scheme) is None)
    assert [labels[j] for j, ok in enumerate(can_start) if not ok] == [t for t in labels if t[0] in "IE"]
    if scheme == "bioes":
        assert [labels[i] for i, ok in enumerate(can_end) if not ok] == [t for t in labels if t[0] in "BI"]


def test_entity_scores_count_exact_matches_per_type():
    gold = [["B-per", "I-per", "O", "B-loc"], ["B-org", "O"]]
    predicted = [["B-per", "I-per", "O", "B-per"], ["B-org", "B-loc"]]
    scores = entity_scores(gold, predicted)
    assert (scores["precision"], scores["recall"]) == (2 / 4, 2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores["per_type"]["loc"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "entities": 1}
    assert scores["per_type"]["per"]["precision"] == 0.5 and scores["per_type"]["per"]["recall"] == 1.0


def test_entity_scores_match_seqeval_on_random_sequences():
    seqeval = pytest.importorskip("seqeval.metrics")
    generator = random.Random(0)
    tags = ["O", "B-a", "I-a", "B-b", "I-b", "E-a", "S-b"]
    for _ in range(200):
        gold = [[generator.choice(tags[:5]) for _ in range(generator.randint(1, 8))] for _ in range(generator.randint(1, 5))]
        predicted = [[generator.choice(tags) for _ in sentence] for sentence in gold]
        ours = entity_scores(gold, predicted)
        assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, predicted, zero_division=0))
        assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, predicted, zero_division=0))
        assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, predicted, zero_division=0))


def _random_crf(num_tags: int, seed: int) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.normal_()
    return crf.requires_grad_(False)


@torch.no_grad()
def _brute_force(crf: CRF, emissions: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Score of every tag path of one sequence, written out from the definition."""
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=emissions.shape[0]):
        score = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
        score = score + sum(emissions[t, tag] for t, tag in enumerate(path))
        score = score + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))
        scores[path] = float(score)
    return scores


@pytest.mark.parametrize("length", [1, 2, 4])
def test_crf_matches_brute_force(length):
    crf = _random_crf(3, seed=length)
    emissions = torch.randn(1, length, 3)
    mask = torch.ones(1, length, dtype=torch.bool)
    every = _brute_force(crf, emissions[0])
    for path, expected in every.items():
        assert float(crf.score(emissions, torch.tensor([path]), mask)) == pytest.approx(expected, abs=1e-5)
    assert float(crf.log_partition(emissions, mask)) == pytest.approx(float(torch.logsumexp(torch.tensor(list(every.values())), 0)), abs=1e-5)
    best = max(every, key=every.get)
    assert crf.decode(emissions, mask, constrained=False) == [list(best)]


def test_crf_masks_padding_in_a_batch():
    crf = _random_crf(4, seed=7)
    lengths = [3, 1, 5]
    emissions = torch.randn(3, 5, 4)
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    tags = torch.randint(0, 4, (3, 5))
    batched_partition = crf.log_partition(emissions, mask)
    batched_score = crf.score(emissions, tags, mask)
    decoded = crf.decode(emissions, mask, constrained=False)
    for row, length in enumerate(lengths):
        alone = (emissions[row : row + 1, :length], torch.ones(1, length, dtype=torch.bool))
        assert float(batched_partition[row]) == pytest.approx(float(crf.log_partition(*alone)), abs=1e-5)
        assert float(batched_score[row]) == pytest.approx(float(crf.score(alone[0], tags[row : row + 1, :length], alone[1])), abs=1e-5)
        assert decoded[row] == crf.decode(*alone, constrained=False)[0]
    # the loss is a mean negative log-likelihood: positive, with gradients
    crf.requires_grad_(True)
    loss = crf(emissions, tags, mask)
    loss.backward()
    assert loss.item() > 0 and crf.transitions.grad is not None


def test_constrained_decoding_never_breaks_the_scheme():
    labels = tags_for_types(["a", "b"], "bio")
    crf = CRF(len(labels), *allowed_transitions(labels, "bio"))
    torch.manual_seed(0)
    emissions = torch.randn(50, 6, len(labels)) * 5
    mask = torch.ones(50, 6, dtype=torch.bool)
    unconstrained = crf.decode(emissions, mask, constrained=False)
    assert any(tag_problem("O", labels[path[0]], "bio") for path in unconstrained)  # the constraint matters here
    for path in crf.decode(emissions, mask):
        tags = [labels[index] for index in path]
        assert all(tag_problem(before, after, "bio") is None for before, after in zip(["O", *tags], tags))
