"""Tokenizers trained on real text, and the language-model batching over a token stream."""

from __future__ import annotations

import os

import pytest
import torch

import seqkit
from seqkit.config import load_recipe
from seqkit.data import LMStream, read_text, token_stream
from seqkit.errors import DataError
from seqkit.tokenize import EOS, PAD, UNK, decode, load_tokenizer, special_ids, tokenizer_kind, train_tokenizer
from seqkit.train import train

from helpers import MOBY, first_lines

LINES = first_lines(MOBY / "train.txt", 60).splitlines()


def test_word_tokenizer_splits_punctuation_lowercases_and_keeps_specials_first():
    tokenizer = train_tokenizer("word", LINES, lowercase=True)
    assert [tokenizer.token_to_id(t) for t in (PAD, UNK, EOS)] == [0, 1, 2]
    assert tokenizer.pre_tokenizer.pre_tokenize_str("don't stop")[:3] == [("don", (0, 3)), ("'", (3, 4)), ("t", (4, 5))]
    encoding = tokenizer.encode("The Whale, he said!")
    assert encoding.tokens == ["the", "whale", ",", "he", "said", "!"]
    assert tokenizer.encode("zyzzyva").tokens == [UNK]
    assert tokenizer_kind(tokenizer) == "word"


def test_word_tokenizer_min_frequency_and_vocab_size():
    every = train_tokenizer("word", LINES).get_vocab_size()
    frequent = train_tokenizer("word", LINES, min_frequency=3).get_vocab_size()
    capped = train_tokenizer("word", LINES, vocab_size=100)
    assert frequent < every
    assert capped.get_vocab_size() == 100 and capped.token_to_id(PAD) == 0


def test_bpe_tokenizer_never_needs_unk_and_round_trips():
    tokenizer = train_tokenizer("bpe", LINES, vocab_size=500)
    assert tokenizer.get_vocab_size() <= 500
    text = "Call me Ishmael — 日本語 🐋"
    ids = tokenizer.encode(text).ids
    assert special_ids(tokenizer).unk not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer_kind(tokenizer) == "bpe"


def test_char_tokenizer_keeps_spaces():
    tokenizer = train_tokenizer("char", LINES)
    encoding = tokenizer.encode("a  whale")
    assert encoding.tokens == ["a", " ", " ", "w", "h", "a", "l", "e"]
    assert decode(tokenizer, encoding.ids) == "a  whale"
    assert tokenizer_kind(tokenizer) == "char"


def test_decode_turns_eos_into_line_breaks():
    tokenizer = train_tokenizer("word", LINES, lowercase=True)
    eos = special_ids(tokenizer).eos
    ids = tokenizer.encode("the whale").ids + [eos] + tokenizer.encode("the sea").ids
    assert decode(tokenizer, ids) == "the whale\nthe sea"


def test_saved_tokenizer_loads_back(tmp_path):
    tokenizer = train_tokenizer("word", LINES)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert loaded.encode("Call me Ishmael.").ids == tokenizer.encode("Call me Ishmael.").ids
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not a Hugging Face tokenizer.json"):
        load_tokenizer(tmp_path / "broken.json")


def test_token_stream_puts_eos_after_each_non_empty_line(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("the whale\n\n\nthe sea\n", encoding="utf-8")
    tokenizer = train_tokenizer("word", ["the whale", "the sea"])
    stream = token_stream(path, tokenizer)
    assert decode(tokenizer, stream.tolist()) == "the whale\nthe sea\n"
    assert stream.tolist().count(special_ids(tokenizer).eos) == 2


@pytest.mark.parametrize("length, batch_size, bptt, offset", [(23, 4, 3, 0), (100, 7, 5, 3), (10, 3, 50, 0), (5, 8, 2, 0)])
def test_lm_stream_scores_every_token_once_in_order(length, batch_size, bptt, offset):
    stream = torch.arange(1, length + 1)
    chunks = LMStream(stream, batch_size, bptt, pad_id=0, offset=offset)
    rows_inputs = torch.cat([chunk.token_ids for chunk in chunks], dim=1)
    rows_targets = torch.cat([chunk.targets for chunk in chunks], dim=1)
    assert all(chunk.token_ids.shape[1] <= bptt for chunk in chunks)
    targets = rows_targets[rows_targets != 0]
    assert sorted(targets.tolist()) == list(range(offset + 2, length + 1))
    real = rows_targets != 0
    # each target is the token after its input: contiguous text within a row
    assert torch.equal(rows_targets[real], rows_inputs[real] + 1)


@pytest.mark.parametrize("length, batch_size, bptt, context", [(100, 4, 7, 10), (100, 7, 5, 40), (23, 4, 3, 100), (9, 8, 4, 3)])
def test_lm_stream_with_context_reads_the_text_before_each_row_and_still_scores_every_token_once(length, batch_size, bptt, context):
    stream = torch.arange(1, length + 1)
    chunks = LMStream(stream, batch_size, bptt, pad_id=0, context=context)
    rows_inputs = torch.cat([chunk.token_ids for chunk in chunks], dim=1)
    rows_targets = torch.cat([chunk.targets for chunk in chunks], dim=1)
    assert sorted(rows_targets[rows_targets != 0].tolist()) == list(range(2, length + 1))  # as without context
    real = rows_targets != 0
    assert torch.equal(rows_targets[real], rows_inputs[real] + 1)
    row_length = LMStream(stream, batch_size, bptt, pad_id=0).rows.shape[1] - 1
    read_first = min(context, row_length)
    assert rows_inputs[0, 0] == 1  # the first row starts at the start
    for row in range(1, batch_size):  # the others read the tokens before their slice first
        assert rows_inputs[row, :read_first].tolist() == stream[row * row_length - read_first : row * row_length].tolist()


def test_evaluation_rows_with_context_agree_with_one_row(tiny_recipe):
    from seqkit.tasks.language_model import evaluate_language_model

    lm = seqkit.load(train(load_recipe(tiny_recipe, ["train.max_steps=20"]), quiet=True).run_dir / "best", device="cpu")
    ids = special_ids(lm.tokenizer)
    stream = token_stream("data/train.txt", lm.tokenizer)
    one_row = evaluate_language_model(lm.model, stream, 1, 12, ids.pad, ids.unk)
    for rows in (4, 16):
        with_context = evaluate_language_model(lm.model, stream, rows, 12, ids.pad, ids.unk, context=100)
        assert with_context["tokens"] == one_row["tokens"]
        assert with_context["loss"] == pytest.approx(one_row["loss"], rel=1e-3)


def test_empty_and_undecodable_files_are_named(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="blank.txt: holds no text"):
        read_text(blank)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("fine line\nsecond\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt:3: not UTF-8"):
        read_text(latin)
    with pytest.raises(DataError, match="not a file"):
        read_text(tmp_path)


def test_tokenized_cache_follows_the_file_and_the_tokenizer(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("the whale\n", encoding="utf-8")
    tokenizer = train_tokenizer("word", ["the whale", "the sea"])
    assert decode(tokenizer, token_stream(path, tokenizer).tolist()) == "the whale\n"
    path.write_text("the sea\n", encoding="utf-8")
    os.utime(path, (1, 1))  # a later edit, whatever the file system's clock resolution
    assert decode(tokenizer, token_stream(path, tokenizer).tolist()) == "the sea\n"
    other = train_tokenizer("word", ["sea the", "whale"])
    assert token_stream(path, other).tolist() == other.encode("the sea").ids + [special_ids(other).eos]


def test_language_model_text_from_several_files_and_json_lines(tmp_path):
    from helpers import write_jsonl

    (tmp_path / "a.txt").write_text("the whale\n\nthe sea\n", encoding="utf-8")
    write_jsonl(tmp_path / "b.jsonl", [{"text": "the ship", "year": 1790}, {"text": "the crew"}])
    dataset = read_text([tmp_path / "a.txt", tmp_path / "b.jsonl"])
    assert [row for row in dataset["text"] if row] == ["the whale", "the sea", "the ship", "the crew"]
    (tmp_path / "c.jsonl").write_text('{"text": "ok"}\n{"body": "no"}\n')
    with pytest.raises(DataError, match=r"c.jsonl:2: no 'text' field"):
        read_text([tmp_path / "a.txt", tmp_path / "c.jsonl"])


def test_word_bytes_shift_every_byte_by_one_and_pad_with_zero():
    from seqkit.data.batch import MAX_WORD_BYTES, _word_bytes

    words = ["ab", "", "a\0b", "é", "x" * (MAX_WORD_BYTES + 5)]  # a NUL byte, two bytes of one letter, a word cut short
    ids = _word_bytes(words)
    assert ids.shape == (5, MAX_WORD_BYTES) and ids.dtype == torch.int64
    assert ids[0, :3].tolist() == [ord("a") + 1, ord("b") + 1, 0] and not ids[1].any()
    assert ids[2, :4].tolist() == [ord("a") + 1, 1, ord("b") + 1, 0]  # NUL is byte 0: id 1, not padding
    assert ids[3, :3].tolist() == [0xC3 + 1, 0xA9 + 1, 0] and (ids[4] == ord("x") + 1).all()


def test_word_ids_remember_words_until_the_vocabulary_grows():
    from seqkit.tokenize import word_ids, word_tokenizer

    tokenizer = word_tokenizer(["the", "whale", "the"], lowercase=True, min_frequency=1, vocab_size=None, split="whitespace")
    unk = tokenizer.token_to_id(UNK)
    assert word_ids(tokenizer, ["The", "whale", "ship"]) == [tokenizer.token_to_id("the"), tokenizer.token_to_id("whale"), unk]
    assert word_ids(tokenizer, ["The", "whale", "ship"]) == [tokenizer.token_to_id("the"), tokenizer.token_to_id("whale"), unk]  # remembered
    tokenizer.add_tokens(["ship"])  # a token added since: the remembered <unk> is forgotten
    assert word_ids(tokenizer, ["ship"]) == [tokenizer.token_to_id("ship")] != [unk]
