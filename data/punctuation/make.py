"""Build data/punctuation/{train,valid,test}.conll.gz from the shipped prose.

    python data/punctuation/make.py          # no network; --out, --moby, --sotu, --window to change

Punctuation restoration as tagging: the text of *Moby-Dick* (``data/moby-dick/*.txt``) and
of the State of the Union paragraphs (``data/sotu/paragraphs.jsonl.gz``) becomes lowercase
words with every mark removed, each word tagged with the mark that followed it:

- ``QUESTION``: a ``?`` between this word and the next;
- ``PERIOD``: otherwise ``.``, ``!``, ``;`` or an ellipsis (sentence ends, and Melville's
  clause-ending semicolons, folded together as IWSLT's punctuation task does);
- ``COMMA``: otherwise ``,``, ``:`` or a dash (``—``, ``–``, a free-standing ``-``);
- ``O``: no mark (quotes, brackets, ``*``, ``$`` and the like are removed and tag nothing).

A word is letters and digits, with apostrophes and hyphens inside it (``don't``,
``whale-fish``) and ``.`` / ``,`` / ``:`` between digits (``1,000``, ``3.5``). The dot of a
title abbreviation (``Mr.``, ``St.``, ``Gen.``: the list below), of a dotted acronym
(``U.S.``) or of an initial before a name (``John F. Kennedy``) belongs to its word
(``mr.``, ``u.s.``, ``f.``) and is not a mark. Moby-Dick's chapter headings and indented
lines (the table of names for the whale) are left out.

Each document -- a chapter of Moby-Dick (the Etymology and the Extracts count as two), or
one address -- is read as one stream of words, paragraphs in order, and cut into windows of
``WINDOW`` words (the last one of a document shorter): one CoNLL "sentence" per window, so
that a window starts and ends wherever the count falls, mostly mid-sentence, as a
restorer reads an unpunctuated stream. A ``# document: ...`` comment line (which seqkit's
CoNLL reader skips) opens each document. Splits are by whole documents: Moby-Dick keeps the
split of ``data/moby-dick`` (train: chapters 1-120 with the Etymology and Extracts, valid:
121-128, test: 129-135 and the Epilogue); the addresses, in the order of the file, go to
test when their index is 9 mod 10, to valid when it is 4 mod 10, to train otherwise. Nothing
is random. The gzip files carry no name and no time: rerunning gives identical bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 50
TAGS = ("O", "COMMA", "PERIOD", "QUESTION")
ABBREVIATIONS = frozenset("""
    Mr Mrs Ms Messrs Mme Dr St Mt Ft Jr Sr Rev Hon Prof
    Gen Col Maj Capt Lt Sgt Cpl Adm Cmdr Comdr Gov Sen Rep Supt Atty Pres
    Vol Art Sec Co Corp Inc Ltd Bros Dept Govt
    Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec
""".split())
_ALNUM = r"[^\W_]"
WORD = re.compile(
    rf"(?:[^\W\d_]\.){{2,}}"                                   # a dotted acronym: U.S.
    rf"|[A-Z]\.(?=\s+[A-Z])"                                    # an initial before a name: F. Kennedy
    rf"|{_ALNUM}+(?:(?:['’‑-]|(?<=\d)[.,:](?=\d)){_ALNUM}+)*"  # a word: don't, whale-fish, 1,000
)
DASH = re.compile(r"[—–]|(?<![^\W_])-|-(?![^\W_])")


def mark(gap: str) -> str:
    """The tag for the characters ``gap`` between a word and the next one."""
    if "?" in gap:
        return "QUESTION"
    if any(char in gap for char in ".!;…"):
        return "PERIOD"
    if "," in gap or ":" in gap or DASH.search(gap):
        return "COMMA"
    return "O"


def tag_text(text: str) -> list[tuple[str, str]]:
    """``(word, tag)`` for each word of ``text``: the word lowercase, the tag the mark after
    it (up to the next word, or the end of ``text``)."""
    found = []
    matches = list(WORD.finditer(text))
    for number, match in enumerate(matches):
        word, end = match.group(), match.end()
        if word in ABBREVIATIONS and text.startswith(".", end):
            word, end = word + ".", end + 1
        following = matches[number + 1].start() if number + 1 < len(matches) else len(text)
        found.append((word.lower(), mark(text[end:following])))
    return found


def moby_documents(text: str) -> list[tuple[str, list[str]]]:
    """One ``(name, paragraphs)`` per chapter of a Moby-Dick file (one paragraph a line),
    the heading lines and indented lines left out."""
    documents: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if not line.strip() or line[0].isspace():
            continue
        heading = re.match(r"(CHAPTER \d+|ETYMOLOGY|EXTRACTS|Epilogue)\b", line)
        if heading:
            documents.append((f"Moby-Dick {heading.group(1).lower()}", []))
        elif documents:
            documents[-1][1].append(line)
        else:
            raise SystemExit(f"a Moby-Dick paragraph before any heading: {line[:60]!r}")
    return documents


def sotu_documents(records: list[dict]) -> list[tuple[str, list[str]]]:
    """One ``(name, paragraphs)`` per address, in the order of the records."""
    documents: list[tuple[str, list[str]]] = []
    for record in records:
        name = f"State of the Union {record['address']}"
        if not documents or documents[-1][0] != name:
            documents.append((name, []))
        documents[-1][1].append(record["text"])
    return documents


def split_of_address(index: int) -> str:
    """Which split the ``index``-th address (0-based) goes to."""
    return "test" if index % 10 == 9 else "valid" if index % 10 == 4 else "train"


def conll(documents: list[tuple[str, list[str]]], window: int = WINDOW) -> str:
    """The CoNLL text of ``documents``: a comment naming each, then its words in windows."""
    lines = []
    for name, paragraphs in documents:
        words = [pair for paragraph in paragraphs for pair in tag_text(paragraph)]
        lines.append(f"# document: {name}")
        for start in range(0, len(words), window):
            lines.extend(f"{word}\t{tag}" for word, tag in words[start : start + window])
            lines.append("")
    return "\n".join(lines) + "\n"


def build(moby: Path, sotu: Path, window: int = WINDOW) -> dict[str, str]:
    """The CoNLL text of each split, from the Moby-Dick folder and the SOTU paragraphs."""
    splits: dict[str, list[tuple[str, list[str]]]] = {"train": [], "valid": [], "test": []}
    for split in splits:
        splits[split].extend(moby_documents((moby / f"{split}.txt").read_text(encoding="utf-8")))
    with gzip.open(sotu, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    for index, document in enumerate(sotu_documents(records)):
        splits[split_of_address(index)].append(document)
    return {split: conll(documents, window) for split, documents in splits.items()}


def write_gzip(path: Path, text: str) -> None:
    """``text`` gzipped with no file name and no time in the header (identical bytes on rerun)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
        handle.write(text.encode("utf-8"))
    path.write_bytes(buffer.getvalue())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the punctuation-restoration CoNLL files.")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "punctuation", help="folder for {train,valid,test}.conll.gz")
    parser.add_argument("--moby", type=Path, default=ROOT / "data" / "moby-dick", help="folder with Moby-Dick's {train,valid,test}.txt")
    parser.add_argument("--sotu", type=Path, default=ROOT / "data" / "sotu" / "paragraphs.jsonl.gz", help="the SOTU paragraphs")
    parser.add_argument("--window", type=int, default=WINDOW, help="words per CoNLL sentence")
    args = parser.parse_args(argv)
    for split, text in build(args.moby, args.sotu, args.window).items():
        write_gzip(args.out / f"{split}.conll.gz", text)
        tags = [line.split("\t")[1] for line in text.splitlines() if "\t" in line]
        counts = ", ".join(f"{tag} {tags.count(tag):,}" for tag in TAGS)
        print(f"{split}: {text.count('# document: '):,} documents, {text.count(chr(10) + chr(10)):,} windows, "
              f"{len(tags):,} words ({counts})")  # fmt: skip


if __name__ == "__main__":
    main()
