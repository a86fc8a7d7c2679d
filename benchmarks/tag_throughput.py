"""Tagging speed of ``Tagger.tag`` on this CPU, beside Flair in the same run.

    seqkit train recipes/ner.yaml                                # once: the tagger to measure
    seqkit export runs/ner/best runs/ner-onnx --format onnx      # once: its ONNX export
    python -m venv flair-venv && flair-venv/bin/pip install torch==2.13.0 flair==0.15.1
    python benchmarks/tag_throughput.py --checkpoint runs/ner/best --onnx runs/ner-onnx \\
        --peer-python flair-venv/bin/python [--repeats 5] [--threads 2] \\
        [--onnx-int8 runs/ner-int8] [--numpy-loops]

Input: the 239 WNUT-16 dev tweets five times over (1,195 sentences, 23,555 words),
pre-tokenized, the same word lists for every runtime. Three ways of calling, each timed
over the whole list: ``tag(list, batch_size=32)``; ``tag(list, batch_size=1)``; and one
sentence per call, as a service calls it (sentences/s, and the median and 99th
percentile of the calls' latencies); and each process's peak resident memory. For seqkit,
also the median of the model's own call on each sentence alone, and what ``tag()`` adds on
top of it (tokens to tensors, Viterbi, the probabilities, the ``Doc``). seqkit
returns every word's probability and every entity's (``scores=True``, the default); Flair
its labels with their scores.

Each runtime runs in a child process of its own -- seqkit on PyTorch, seqkit on ONNX
Runtime, optionally its int8 export (``--onnx-int8``: ``seqkit export ... --quantize int8``)
and PyTorch with the CRF's NumPy loops instead of Numba's (``--numpy-loops``:
``SEQKIT_NUMBA=0``), Flair (``--peer-python``: a Python with ``flair`` installed; seqkit
does not depend on it) -- one after another, in a rotated order each round, ``--repeats`` rounds;
each figure is the median over the rounds, and the ratios are seqkit's over Flair's. Every
child computes with ``--threads`` threads. The Flair model is ``../shared/PEERS.md``'s: a
``SequenceTagger`` with a BiLSTM of 256 per direction and a CRF over one-hot word
embeddings (300-d, the training words seen at least 3 times) stacked with character
embeddings (BiLSTM, 50-d), built in its child from ``data/wnut16/train.conll`` with the
weights it is initialised with (seed 0): tagging costs the same whatever the weights.
``--quick`` (48 sentences, one round) checks that the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "wnut16" / "dev.conll"
TRAIN = ROOT / "data" / "wnut16" / "train.conll"
COPIES = 5  # 239 dev tweets x 5 = 1,195 sentences
MODES = ("batch 32", "batch 1 over the list", "one sentence per call")  # sentences/s
TIMES = ("median ms", "p99 ms", "import + load s", "peak RSS MiB")  # lower is better


def read_sentences(path: Path) -> list[list[list[str]]]:
    """Each sentence of a CoNLL file as ``[words, tags]`` (first and last column)."""
    sentences, words, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.strip():
            columns = line.split("\t") if "\t" in line else line.split()
            words.append(columns[0])
            tags.append(columns[-1])
        elif words:
            sentences.append([words, tags])
            words, tags = [], []
    return sentences


# --- In a child process: one runtime, every mode -------------------------------------------


def time_modes(tag_batch, tag_one, sentences: list[list[str]]) -> dict[str, float]:
    """Sentences/s of each mode, and the per-call latencies' median and p99 in ms."""
    tag_batch(sentences[:64], 32)  # warm-up: first calls allocate
    for words in sentences[:64]:
        tag_one(words)
    figures = {}
    for mode, batch_size in (("batch 32", 32), ("batch 1 over the list", 1)):
        started = time.perf_counter()
        tag_batch(sentences, batch_size)
        figures[mode] = len(sentences) / (time.perf_counter() - started)
    latencies = []
    for words in sentences:
        started = time.perf_counter()
        tag_one(words)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    figures["one sentence per call"] = len(sentences) / sum(latencies)
    figures["median ms"] = 1e3 * statistics.median(latencies)
    figures["p99 ms"] = 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return figures


def seqkit_child(runtime: str, path: str, sentences: list[list[str]]) -> dict:
    """seqkit on ``runtime`` (torch or onnx): load time, the modes, and dev F1 (untimed)."""
    started = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    import seqkit

    tagger = seqkit.Tagger.from_pretrained(path, device="cpu", runtime=runtime)
    load_seconds = time.perf_counter() - started
    figures = time_modes(lambda batch, size: tagger.tag(batch, batch_size=size), lambda words: tagger.tag([words])[0], sentences)
    tags = [doc.tags for doc in tagger.tag(sentences[: len(sentences) // COPIES], batch_size=32)]
    return {**figures, "model median ms": model_median(tagger, sentences), "import + load s": load_seconds,
            "dev f1": tagger.evaluate(DEV)["f1"], "tags": tags}  # fmt: skip


def model_median(tagger, sentences: list[list[str]]) -> float:
    """The median ms of the model's own call (embeddings, encoder, emissions; ONNX Runtime's
    session or PyTorch's forward) on each sentence alone, collated beforehand: what a call of
    ``tag()`` costs before tokenizing, batching, decoding and the probabilities."""
    import torch

    from seqkit.data.batch import collate_tagged
    from seqkit.tokenize import special_ids, word_ids

    pad_id, latencies = special_ids(tagger.tokenizer).pad, []
    with torch.inference_mode():
        for words in sentences:
            batch = collate_tagged([word_ids(tagger.tokenizer, words)], [words], None, pad_id)
            started = time.perf_counter()
            tagger.model(batch.token_ids, batch.lengths, char_ids=batch.char_ids, char_index=batch.char_index)
            latencies.append(time.perf_counter() - started)
    return 1e3 * statistics.median(latencies)


def flair_child(sentences: list[list[str]]) -> dict:
    """Flair's ``SequenceTagger`` of PEERS.md, built from the training file: the modes."""
    started = time.perf_counter()
    from collections import Counter

    import flair
    from flair.data import Dictionary, Sentence
    from flair.embeddings import CharacterEmbeddings, OneHotEmbeddings, StackedEmbeddings
    from flair.models import SequenceTagger

    import_seconds = time.perf_counter() - started
    flair.set_seed(0)
    train = read_sentences(TRAIN)
    counts = Counter(word for words, _ in train for word in words)
    vocabulary = Dictionary()
    for word, count in counts.most_common():
        if count >= 3:  # OneHotEmbeddings.from_corpus's min_freq
            vocabulary.add_item(word)
    types = Dictionary(add_unk=False)
    for tag in sorted({tag[2:] for _, tags in train for tag in tags if tag != "O"}):
        types.add_item(tag)
    types.span_labels = True
    characters = Dictionary()  # the training words' characters (Flair's default list is a download)
    for character in sorted({character for word in counts for character in word}):
        characters.add_item(character)
    embeddings = StackedEmbeddings([OneHotEmbeddings(vocabulary, embedding_length=300), CharacterEmbeddings(characters)])
    tagger = SequenceTagger(hidden_size=256, embeddings=embeddings, tag_dictionary=types, tag_type="ner", use_crf=True).eval()

    def tag_batch(batch: list[list[str]], size: int) -> None:
        tagger.predict([Sentence(words) for words in batch], mini_batch_size=size)

    figures = time_modes(tag_batch, lambda words: tagger.predict(Sentence(words)), sentences)
    return {**figures, "import + load s": import_seconds, "dev f1": None, "tags": None}


SEQKIT_RUNTIMES = {"torch": "torch", "torch-numpy": "torch", "onnx": "onnx", "onnx-int8": "onnx"}  # a child's name -> runtime=


def child(arguments: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(arguments.threads)  # before loading: an ONNX session takes torch's count
    sentences = [words for words, _ in read_sentences(DEV)][: arguments.sentences] * (1 if arguments.quick else COPIES)
    if arguments.child == "flair":
        result = flair_child(sentences)
    else:
        path = {"onnx": arguments.onnx, "onnx-int8": arguments.onnx_int8}.get(arguments.child, arguments.checkpoint)
        result = seqkit_child(SEQKIT_RUNTIMES[arguments.child], path, sentences)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: the child's own high-water mark
    print(json.dumps({**result, "peak RSS MiB": peak, "threads": torch.get_num_threads(), "sentences": len(sentences)}))


# --- The parent: children in turn, medians, ratios ------------------------------------------


def run_child(python: str, runtime: str, arguments: argparse.Namespace) -> dict:
    command = [python, __file__, "--child", runtime, "--threads", str(arguments.threads), "--checkpoint", arguments.checkpoint,
               "--onnx", arguments.onnx or "", "--onnx-int8", arguments.onnx_int8 or ""] + (["--quick", "--sentences", str(arguments.sentences)] if arguments.quick else [])  # fmt: skip
    environment = {**os.environ, **({"SEQKIT_NUMBA": "0"} if runtime == "torch-numpy" else {})}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment)
    if done.returncode != 0:
        raise SystemExit(f"{runtime}: the child process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    """``seqkit.runtime.describe_cpu`` (the model name, vector unit and bf16), as every benchmark prints it."""
    sys.path.insert(0, str(ROOT))
    from seqkit.runtime import describe_cpu

    return describe_cpu()


def report(results: dict[str, list[dict]], arguments: argparse.Namespace, loads: list[tuple[float, ...]]) -> None:
    median = {runtime: {key: statistics.median(run[key] for run in runs) for key in (*MODES, *TIMES)}
              for runtime, runs in results.items()}  # fmt: skip
    runtimes = list(results)
    mine = [runtime for runtime in runtimes if runtime != "flair"]
    print(f"{cpu_name()}; {os.cpu_count()} cores, {arguments.threads} threads per process; "
          f"{results[runtimes[0]][0]['sentences']:,} sentences; median of {len(results[runtimes[0]])} rounds")  # fmt: skip
    print(f"load average (1, 5, 15 min) at the start {loads[0][0]:.2f} {loads[0][1]:.2f} {loads[0][2]:.2f}, "
          f"at the end {loads[-1][0]:.2f} {loads[-1][1]:.2f} {loads[-1][2]:.2f}")  # fmt: skip
    compared = mine if "flair" in results else []
    print("| mode | " + " | ".join(runtimes) + " |" + "".join(f" {runtime} / Flair |" for runtime in compared))
    print("| --- |" + " ---: |" * (len(runtimes) + len(compared)))
    for key in (*MODES, *TIMES):
        cells = [f"{median[runtime][key]:,.1f}" if key in TIMES else f"{median[runtime][key]:,.0f}" for runtime in runtimes]
        ratios = []
        for runtime in compared:
            ours, theirs = median[runtime][key], median["flair"][key]
            ratios.append(f"{(theirs / ours if key in TIMES else ours / theirs):.1f}x")  # how many times faster
        label = f"{key} (one sentence per call)" if key.endswith(" ms") else key
        print(f"| {label} | " + " | ".join(cells + ratios) + " |")
    model = {runtime: statistics.median(run["model median ms"] for run in results[runtime]) for runtime in mine}
    print("one sentence per call, the model's own call alone (median ms) and what tag() adds on top of it: "
          + "; ".join(f"{runtime} {model[runtime]:.2f} + {median[runtime]['median ms'] - model[runtime]:.2f}" for runtime in mine))
    for runtime in runtimes:
        if results[runtime][0]["dev f1"] is not None:
            print(f"{runtime}: dev entity F1 {results[runtime][0]['dev f1']:.4f}")
    for runtime in mine[1:]:
        same = sum(a == b for a, b in zip(results[mine[0]][0]["tags"], results[runtime][0]["tags"]))
        print(f"{runtime} gives {mine[0]}'s tags on {same} of {len(results[runtime][0]['tags'])} dev tweets")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/ner/best")
    parser.add_argument("--onnx", default=None, help="an ONNX export of the checkpoint (seqkit export CKPT DIR --format onnx)")
    parser.add_argument("--onnx-int8", default=None, help="its int8 export too (seqkit export CKPT DIR --format onnx --quantize int8)")
    parser.add_argument("--numpy-loops", action="store_true", help="PyTorch with the CRF's NumPy loops too (SEQKIT_NUMBA=0), beside Numba's")
    parser.add_argument("--peer-python", default=None, help="a Python with flair installed, to run Flair in the same run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="48 sentences, one round: a check that the script runs")
    parser.add_argument("--child", choices=(*SEQKIT_RUNTIMES, "flair"), help=argparse.SUPPRESS)
    parser.add_argument("--sentences", type=int, default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        return child(arguments)
    arguments.checkpoint = str(Path(arguments.checkpoint).resolve())
    arguments.onnx = str(Path(arguments.onnx).resolve()) if arguments.onnx else None
    arguments.onnx_int8 = str(Path(arguments.onnx_int8).resolve()) if arguments.onnx_int8 else None
    if arguments.quick:
        arguments.repeats, arguments.sentences = 1, 48
    if not (Path(arguments.checkpoint) / "config.yaml").is_file():
        raise SystemExit(f"{arguments.checkpoint}: no tagger checkpoint here; train one first: seqkit train recipes/ner.yaml")
    runtimes = [("torch", sys.executable)] + ([("torch-numpy", sys.executable)] if arguments.numpy_loops else [])
    runtimes += [(name, sys.executable) for name, path in (("onnx", arguments.onnx), ("onnx-int8", arguments.onnx_int8)) if path]
    runtimes += [("flair", arguments.peer_python)] if arguments.peer_python else []
    results: dict[str, list[dict]] = {runtime: [] for runtime, _ in runtimes}
    loads = [os.getloadavg()]
    for round_ in range(arguments.repeats):
        for runtime, python in runtimes[round_ % len(runtimes):] + runtimes[: round_ % len(runtimes)]:  # rotate the order
            results[runtime].append(run_child(python, runtime, arguments))
            print(f"round {round_ + 1} {runtime}: " + ", ".join(f"{key} {results[runtime][-1][key]:,.1f}" for key in (*MODES, "median ms")), file=sys.stderr)
    loads.append(os.getloadavg())
    report(results, arguments, loads)


if __name__ == "__main__":
    main()
