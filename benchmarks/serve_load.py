"""Load on ``seqkit serve``: requests/s and latency under concurrent clients, against the
Python API batched on the same texts in the same run.

    python benchmarks/serve_load.py [CHECKPOINT] [--clients 16] [--seconds 30] [--max-batch 32] [--max-wait-ms 5]

CHECKPOINT is a tagger (e.g. runs/ner/best after ``seqkit train recipes/ner.yaml``); without
one a tiny tagger is trained first (40 WNUT-16 tweets, seconds). The server runs as
``seqkit serve`` in a subprocess on 127.0.0.1; ``--clients`` threads each keep one
connection and POST ``{"text": tweet}`` (the WNUT-16 dev tweets as raw strings, in turn)
until ``--seconds`` have passed, each waiting for its answer before the next: a bounded
load. Reported: requests/s, median and p99 latency, errors, and the model calls the
server made (``GET /info``: texts per batch). Then, with the server stopped, the same
number of the same texts through ``Tagger.tag(texts, batch_size=--max-batch)`` in this
process: the API's texts/s, the ceiling that the service's requests/s is a ratio of. The
client shares the CPU with the server, as any client on the same machine would.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # the tiny tagger recipe the tests use


def tiny_tagger(directory: Path) -> Path:
    """A tagger of the tests' tiny recipe fitted to 40 tweets; its checkpoint."""
    import yaml

    from helpers import TINY_TAGGER, WNUT, first_sentences
    from seqkit.config import load_recipe
    from seqkit.train import train

    data = directory / "data"
    data.mkdir()
    (data / "train.conll").write_text(first_sentences(WNUT / "train.conll", 40), encoding="utf-8")
    recipe = {**TINY_TAGGER, "output_dir": str(directory / "runs" / "tagger"), "data": {"train": str(data / "train.conll"), "valid": str(data / "train.conll")}}
    (directory / "tagger.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return train(load_recipe(directory / "tagger.yaml", ["train.epochs=4", "train.eval_every=null"]), quiet=True).run_dir / "best"


def start_server(checkpoint: Path, max_batch: int, max_wait_ms: float, threads: int) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "seqkit", "serve", str(checkpoint), "--port", "0", "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
               "--threads", str(threads)]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in process.stderr:
        found = re.search(r"on http://127\.0\.0\.1:(\d+) ", line)
        if found:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # drain
            return process, int(found.group(1))
    raise SystemExit(f"the server did not start (exit {process.wait()})")


def client(port: int, texts: list[str], offset: int, deadline: float, latencies: list[float], errors: list[str]) -> None:
    """One client: a request at a time on one connection until ``deadline``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    index = offset
    while time.perf_counter() < deadline:
        body = json.dumps({"text": texts[index % len(texts)]}).encode()
        started = time.perf_counter()
        try:
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200 or b'"tags"' not in answer:
                errors.append(f"{response.status} {answer[:100]!r}")
        except (OSError, http.client.HTTPException) as error:
            errors.append(repr(error))
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies.append(time.perf_counter() - started)
        index += 1


def info(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/info")
    return json.loads(connection.getresponse().read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a tagger checkpoint (default: train a tiny one)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server and of the API run (default 1: on a shared machine more threads spin against other jobs)")
    args = parser.parse_args()
    if not 1 <= args.clients <= 1024 or not 0 < args.seconds <= 3600:
        raise SystemExit("--clients: 1 to 1024; --seconds: above 0, at most 3600")

    import seqkit
    from seqkit.data import read_conll
    from seqkit.runtime import describe_cpu

    scratch = tempfile.TemporaryDirectory()
    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else tiny_tagger(Path(scratch.name))
    texts = [" ".join(words) for words in read_conll(ROOT / "data" / "wnut16" / "dev.conll")["tokens"]]
    print(f"{describe_cpu()}; load average {', '.join(f'{value:.2f}' for value in os.getloadavg())} before the run")
    print(f"checkpoint {checkpoint}{'' if args.checkpoint else ' (tiny, trained here)'}; {args.clients} clients x {args.seconds:g} s, "
          f"--max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g} --threads {args.threads}; {len(texts)} WNUT-16 dev tweets in turn")  # fmt: skip

    process, port = start_server(checkpoint, args.max_batch, args.max_wait_ms, args.threads)
    try:
        warm: list[float] = []
        client(port, texts, 0, time.perf_counter() + 1.0, warm, [])  # the first calls (allocations, caches) are not the load
        before = info(port)["service"]
        latencies: list[float] = []
        errors: list[str] = []
        started = time.perf_counter()
        deadline = started + args.seconds
        threads = [threading.Thread(target=client, args=(port, texts, index * 17, deadline, latencies, errors)) for index in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        after = info(port)["service"]
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
    batches, answered = after["batches"] - before["batches"], after["texts"] - before["texts"]
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    rate = len(latencies) / elapsed
    print(f"service: {len(latencies):,} requests in {elapsed:.1f} s = {rate:,.1f} requests/s; latency median {statistics.median(ordered) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms; errors {len(errors)}; {batches:,} model calls, {answered / max(batches, 1):.1f} texts each; server exit {code}")  # fmt: skip
    for error in errors[:5]:
        print(f"  error: {error}")

    import torch

    torch.set_num_threads(args.threads)
    tagger = seqkit.load(checkpoint)
    sample = [texts[index % len(texts)] for index in range(len(latencies))]
    tagger.tag(sample[: args.max_batch], batch_size=args.max_batch)  # warm
    started = time.perf_counter()
    tagger.tag(sample, batch_size=args.max_batch)
    api = len(sample) / (time.perf_counter() - started)
    print(f"API: Tagger.tag of the same {len(sample):,} texts, batch_size {args.max_batch}, in this process: {api:,.1f} texts/s; "
          f"the service gives {rate / api:.2f}x of it")  # fmt: skip


if __name__ == "__main__":
    main()
