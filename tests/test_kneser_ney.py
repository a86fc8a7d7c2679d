"""benchmarks/kneser_ney.py: the count-based peer of the language model (interpolated
modified Kneser-Ney), checked on a toy corpus worked by hand, for normalization, against
shared/PEERS.md's Moby-Dick figure, and for the tokenization seqkit's perplexity uses."""

from __future__ import annotations

import gzip
import importlib.util
import math

import pytest
from helpers import MOBY, ROOT, first_lines

_spec = importlib.util.spec_from_file_location("kneser_ney", ROOT / "benchmarks" / "kneser_ney.py")
kneser_ney = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kneser_ney)

TOY = ["a", "b", "a", "b", "c", "<eos>"]  # "a b a b c", one line


def test_discounts_follow_chen_and_goodman():
    """Y = n1/(n1 + 2 n2) = 5/9 for n1..n4 = 10, 4, 2, 1: D1 = 5/9, D2 = 7/6, D3+ = 17/9."""
    d1, d2, d3 = kneser_ney.discounts({1: 10, 2: 4, 3: 2, 4: 1})
    assert (d1, d2, d3) == pytest.approx((5 / 9, 7 / 6, 17 / 9), abs=1e-12)
    assert kneser_ney.discounts({1: 4}) == kneser_ney.FALLBACK_DISCOUNTS  # no n2, n3: undefined


def test_toy_bigram_probabilities_worked_by_hand():
    """Vocabulary a, b, c, <eos>, <unk> (5). Unigram continuation counts are all 1 (each word
    has one distinct left neighbour), total 4, D1 0.5 (fallback): p1(w) = 0.5/4 + 0.5/5 =
    0.225, p1(<unk>) = 0.1. After "a" (a b twice: D2 1.0, gamma 1/2): p(b|a) = 1/2 + 0.5 *
    0.225; after "b" (b a, b c once each: gamma 0.5): p(a|b) = 0.5/2 + 0.5 * 0.225."""
    model = kneser_ney.KneserNey(TOY, order=2)
    assert len(model.vocabulary) == 5
    assert model.prob("a", []) == pytest.approx(0.225)
    assert model.prob("zebra", []) == pytest.approx(0.1)  # out of vocabulary: <unk>
    assert model.prob("b", ["a"]) == pytest.approx(0.6125)
    assert model.prob("c", ["a"]) == pytest.approx(0.1125)
    assert model.prob("a", ["b"]) == pytest.approx(0.3625)
    assert model.prob("a", ["zebra"]) == pytest.approx(0.225)  # an unseen context: the unigram


@pytest.mark.parametrize("order", [1, 3, 5])
def test_probabilities_sum_to_one_over_the_vocabulary(order):
    text = "the whale swam . the whale dove . a ship sailed after the whale , and the ship sank ."
    tokens = kneser_ney.TOKEN.findall(text) + ["<eos>"]
    model = kneser_ney.KneserNey(tokens * 3 + ["ship", "the"], order)
    for context in ([], ["the"], ["after", "the"], ["the", "whale", "swam", "."], ["zebra", "the"], ["sank", ".", "<eos>", "the"]):
        assert math.fsum(model.prob(word, context) for word in model.vocabulary) == pytest.approx(1.0, abs=1e-12)


def test_reproduces_peers_kneser_ney_3gram_on_moby_dick():
    """shared/PEERS.md: Kneser-Ney 3-gram, valid perplexity 189.9 with 275 OOV targets out."""
    model = kneser_ney.KneserNey(kneser_ney.read_tokens(MOBY / "train.txt"), order=3)
    perplexity, scored, skipped = model.perplexity(kneser_ney.read_tokens(MOBY / "valid.txt"))
    assert (round(perplexity, 1), scored, skipped) == (189.9, 9854, 275)


def test_tokens_are_seqkits_word_tokens(tmp_path):
    """The peer's stream is the one seqkit's perplexity_no_unk scores with recipes/lm.yaml's
    tokenizer (word, lowercase, every training word): same tokens, <eos> after each non-empty
    line, read the same from a .txt.gz."""
    from seqkit.data import token_stream
    from seqkit.tokenize import train_tokenizer

    text = first_lines(MOBY / "train.txt", 40)
    path = tmp_path / "train.txt.gz"
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    tokenizer = train_tokenizer("word", text.splitlines(), lowercase=True)
    ours = kneser_ney.read_tokens(path)
    theirs = [tokenizer.id_to_token(i) for i in token_stream(path, tokenizer).tolist()]
    assert ours == theirs and "<unk>" not in theirs
    assert set(tokenizer.get_vocab()) == set(ours) | {"<unk>", "<pad>"}


def test_sotu_lm_split_is_what_lm_split_py_writes(tmp_path):
    """data/sotu/lm/ (the unseen-corpus check in the README) is rebuilt byte for byte by
    data/sotu/lm_split.py, with the sizes README "Results" gives and no paragraph in two splits."""
    import subprocess
    import sys

    subprocess.run([sys.executable, str(ROOT / "data" / "sotu" / "lm_split.py"), "-o", str(tmp_path)], cwd=ROOT, check=True, capture_output=True)
    lines = {}
    for split in ("train", "valid", "test"):
        name = f"{split}.txt.gz"
        assert (tmp_path / name).read_bytes() == (ROOT / "data" / "sotu" / "lm" / name).read_bytes(), name
        lines[split] = gzip.decompress((tmp_path / name).read_bytes()).decode("utf-8").splitlines()
    sizes = {split: len(kneser_ney.read_tokens(ROOT / "data" / "sotu" / "lm" / f"{split}.txt.gz")) for split in lines}
    assert sizes == {"train": 236_440, "valid": 10_458, "test": 21_245}
    assert not set(lines["train"]) & set(lines["test"]) and not set(lines["valid"]) & set(lines["test"])  # no paragraph in two


def test_run_metrics_reads_best_valid_and_test(tmp_path):
    """--run DIR: the figures of best/ (the last valid line marked best), without <unk>."""
    import json

    records = [
        {"step": 10, "split": "train", "loss": 6.0},
        {"step": 20, "split": "valid", "perplexity": 200.0, "perplexity_no_unk": 180.0, "best": True},
        {"step": 40, "split": "valid", "perplexity": 190.0, "perplexity_no_unk": 170.0, "best": True},
        {"step": 60, "split": "valid", "perplexity": 195.0, "perplexity_no_unk": 169.0, "best": False},
        {"step": 60, "split": "test", "perplexity": 210.0, "perplexity_no_unk": 185.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    assert kneser_ney.run_metrics(tmp_path) == (170.0, 185.0)
