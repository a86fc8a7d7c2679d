"""The CoNLL reader: what it accepts, and the file:line it names for what it refuses."""

from __future__ import annotations

import pytest

from seqkit.data import read_conll
from seqkit.errors import DataError

from helpers import ROOT


def _write(tmp_path, text: str, name: str = "data.conll", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_shipped_wnut16_reads_completely():
    train = read_conll(ROOT / "data" / "wnut16" / "train.conll")
    assert len(train) == 1916
    assert sum(len(tokens) for tokens in train["tokens"]) == 37210
    assert train[0]["tokens"][14:17] == ["Empire", "State", "Building"]
    assert train[0]["tags"][14:17] == ["B-facility", "I-facility", "I-facility"]


def test_comments_docstart_spaces_crlf_and_columns(tmp_path):
    text = (
        "-DOCSTART- -X- O O\r\n\r\n"
        "# sent_id = 1\r\n"
        "Empire NNP B-fac\r\nState NNP I-fac\r\n# NN O\r\n\r\n\r\n"
        "#hashtag NN O\r\nBob NNP B-per\r\n"
    )
    path = _write(tmp_path, text)
    data = read_conll(path)
    assert data["tokens"] == [["Empire", "State", "#"], ["#hashtag", "Bob"]]  # '#' and '#hashtag' tokens are data
    assert data["tags"] == [["B-fac", "I-fac", "O"], ["O", "B-per"]]
    assert data["line"] == [4, 9]
    assert read_conll(path, token_column=1, tag_column=2)["tokens"][0] == ["NNP", "NNP", "NN"]


@pytest.mark.parametrize(
    "text, scheme, expected",
    [
        ("a\tO\nb\tO\textra\n", "bio", r"data.conll:2: expected 2 columns \(like the first line\), found 3"),
        ("a\tO\n\nb\n", "bio", r"data.conll:3: expected 2 columns"),
        ("a\tO\nb\tI-per\n", "bio", r"data.conll:2: I-per follows O, which breaks the bio scheme"),
        ("a\tB-loc\nb\tI-per\n", "bio", r"data.conll:2: I-per follows B-loc"),
        ("a\tO\nb\tPER\n", "bio", r"data.conll:2: tag 'PER' is not O or B/I-TYPE"),
        ("a\tB-per\n\nb\tO\n", "bioes", r"data.conll:1: the sentence ends on B-per, which breaks the bioes scheme"),
        ("a\tS-per\nb\tE-per\n", "bioes", r"data.conll:2: E-per follows S-per"),
        ("\n\n  \n", "bio", r"data.conll: holds no sentences"),
        ("a\n", "bio", r"data.conll:1: found 1 column\(s\)"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, text, scheme, expected):
    with pytest.raises(DataError, match=expected):
        read_conll(_write(tmp_path, text), scheme=scheme)


def test_encoding_and_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"data.conll:2: not UTF-8"):
        read_conll(_write(tmp_path, "a\tO\ncafé\tO\n", encoding="latin-1"))
    with pytest.raises(DataError, match="nope.conll: file not found"):
        read_conll(tmp_path / "nope.conll")
    with pytest.raises(DataError, match="not a file"):
        read_conll(tmp_path)
