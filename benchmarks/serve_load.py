"""Load on ``seqkit serve``: requests/s and latency under concurrent clients, against the
Python API batched on the same texts in the same run.

    python benchmarks/serve_load.py [CHECKPOINT] [--clients 16] [--seconds 30] [--max-batch 32] [--max-wait-ms 5]
    python benchmarks/serve_load.py CHECKPOINT --runtime torch,onnx,onnx-int8 --clients 1,2,4,8,16,32 --seconds 10 --plot latency.svg

CHECKPOINT is a tagger (e.g. runs/ner/best after ``seqkit train recipes/ner.yaml``); without
one a tiny tagger is trained first (40 WNUT-16 tweets, seconds). The server runs as
``seqkit serve`` in a subprocess on 127.0.0.1; ``--clients`` threads each keep one
connection and POST ``{"text": tweet}`` (the WNUT-16 dev tweets as raw strings, in turn)
until ``--seconds`` have passed, each waiting for its answer before the next: a bounded
load; a list of client counts runs each in turn against the same server, and ``--plot``
draws latency against them, a line per runtime. Reported: requests/s, median and p99 latency, errors, and the model calls the
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
RUNTIMES = {"torch": "torch", "onnx": "onnx", "onnx-int8": "onnx"}  # --runtime's names -> seqkit serve --runtime
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


def start_server(checkpoint: Path, runtime: str, max_batch: int, max_wait_ms: float, threads: int) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "seqkit", "serve", str(checkpoint), "--port", "0", "--runtime", RUNTIMES[runtime], "--max-batch", str(max_batch),
               "--max-wait-ms", str(max_wait_ms), "--threads", str(threads)]  # fmt: skip
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


def load(port: int, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` bounded clients for ``seconds`` against the running server: its figures."""
    client(port, texts, 0, time.perf_counter() + 1.0, [], [])  # the first calls (allocations, caches) are not the load
    before = info(port)["service"]
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(port, texts, index * 17, started + seconds, latencies, errors)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    after = info(port)["service"]
    ordered = sorted(latencies)
    batches = after["batches"] - before["batches"]
    return {"clients": clients, "requests": len(ordered), "rate": len(ordered) / elapsed, "median_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))] * 1000, "errors": errors,
            "texts_per_call": (after["texts"] - before["texts"]) / max(batches, 1)}  # fmt: skip


def serve_and_load(checkpoint: Path, runtime: str, args: argparse.Namespace, texts: list[str]) -> list[dict]:
    """One server for ``runtime``, each client count of ``--clients`` in turn against it."""
    process, port = start_server(checkpoint, runtime, args.max_batch, args.max_wait_ms, args.threads)
    results = []
    try:
        for clients in args.clients:
            found = load(port, texts, clients, args.seconds)
            results.append({"runtime": runtime, **found})
            print(f"{runtime:>9} {clients:>4} clients: {found['requests']:>6,} requests, {found['rate']:7,.1f} requests/s; latency median "
                  f"{found['median_ms']:6.1f} ms, p99 {found['p99_ms']:6.1f} ms; errors {len(found['errors'])}; {found['texts_per_call']:.1f} texts per model call")  # fmt: skip
            for error in found["errors"][:3]:
                print(f"  error: {error}")
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
    if code != 130:
        print(f"  the {runtime} server exited with {code} (Ctrl-C gives 130)")
    return results


def api_rate(checkpoint: Path, runtime: str, texts: list[str], count: int, batch_size: int) -> float:
    """Texts/s of ``tag(texts, batch_size)`` in this process: the ceiling of the service's requests/s."""
    import seqkit

    tagger = seqkit.load(checkpoint, runtime=RUNTIMES[runtime])
    sample = [texts[index % len(texts)] for index in range(count)]
    tagger.tag(sample[:batch_size], batch_size=batch_size)  # warm
    started = time.perf_counter()
    tagger.tag(sample, batch_size=batch_size)
    return len(sample) / (time.perf_counter() - started)


def plot(results: list[dict], path: Path, title: str) -> None:
    """An SVG of median and p99 latency against concurrent clients (log-2 axes), a line per
    runtime and statistic; small and dependency-free, for the README."""
    import math

    width, height, left, bottom, top, right = 640, 360, 60, 50, 30, 150
    clients = sorted({result["clients"] for result in results})
    y_low = math.floor(math.log2(max(min(result["median_ms"] for result in results), 0.1)))
    y_high = max(math.ceil(math.log2(max(result["p99_ms"] for result in results))), y_low + 1)
    x_max = math.log2(max(clients)) or 1.0

    def x(value: float) -> float:
        return left + (width - left - right) * math.log2(value) / x_max

    def y(value: float) -> float:
        return height - bottom - (height - bottom - top) * (math.log2(max(value, 2.0**y_low)) - y_low) / (y_high - y_low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/><text x="{left}" y="18">{title}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
             f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">concurrent clients</text>',
             f'<text x="14" y="{(top + height - bottom) / 2}" transform="rotate(-90 14 {(top + height - bottom) / 2})" text-anchor="middle">latency, ms</text>']  # fmt: skip
    parts += [f'<text x="{x(value)}" y="{height - bottom + 16}" text-anchor="middle">{value}</text>' for value in clients]
    ticks = [2.0**power for power in range(y_low, y_high + 1)]
    parts += [f'<text x="{left - 6}" y="{y(value) + 4}" text-anchor="end">{value:g}</text>' for value in ticks]
    colours = {"torch": "#1f77b4", "onnx": "#d62728", "onnx-int8": "#2ca02c"}
    for row, (runtime, key) in enumerate((runtime, key) for runtime in colours for key in ("median_ms", "p99_ms")):
        line = sorted((result["clients"], result[key]) for result in results if result["runtime"] == runtime)
        if not line:
            continue
        dash = "" if key == "median_ms" else ' stroke-dasharray="5,4"'
        points = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in line)
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colours[runtime]}" stroke-width="2"{dash}/>')
        parts.append(f'<line x1="{width - right + 12}" y1="{top + 14 + row * 18}" x2="{width - right + 36}" y2="{top + 14 + row * 18}" stroke="{colours[runtime]}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{width - right + 42}" y="{top + 18 + row * 18}">{runtime} {key.split("_")[0]}</text>')
    path.write_text("\n".join(parts + ["</svg>"]) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a tagger checkpoint (default: train a tiny one)")
    parser.add_argument("--clients", default="16", help="concurrent clients, or a comma-separated list to sweep (1,2,4,8,16,32)")
    parser.add_argument("--seconds", type=float, default=30.0, help="of load per client count")
    parser.add_argument("--runtime", default="torch", help="torch, onnx, onnx-int8 or several, comma-separated (onnx: the checkpoint is exported to a "
                                                           "temporary directory first; onnx-int8: with --quantize int8)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server and of the API run (default 1: on a shared machine more threads spin against other jobs)")
    parser.add_argument("--plot", type=Path, help="write an SVG of latency against clients here")
    args = parser.parse_args()
    try:
        args.clients = [int(value) for value in args.clients.split(",")]
    except ValueError:
        raise SystemExit(f"--clients: {args.clients!r} is not a number or a comma-separated list of numbers") from None
    runtimes = args.runtime.split(",")
    if not all(1 <= clients <= 1024 for clients in args.clients) or not 0 < args.seconds <= 3600 or not set(runtimes) <= set(RUNTIMES):
        raise SystemExit("--clients: 1 to 1024 each; --seconds: above 0, at most 3600; --runtime: torch, onnx, onnx-int8 or several, comma-separated")

    from seqkit.data import read_conll
    from seqkit.runtime import describe_cpu

    scratch = tempfile.TemporaryDirectory()
    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else tiny_tagger(Path(scratch.name))
    sources = {"torch": checkpoint}
    for runtime in runtimes:
        if runtime != "torch":
            from seqkit.onnx_export import export_onnx

            sources[runtime] = export_onnx(checkpoint, Path(scratch.name) / runtime, quantize="int8" if runtime == "onnx-int8" else None)[0]
    texts = [" ".join(words) for words in read_conll(ROOT / "data" / "wnut16" / "dev.conll")["tokens"]]
    cpu = describe_cpu()
    print(f"{cpu}; load average {', '.join(f'{value:.2f}' for value in os.getloadavg())} before the run")
    print(f"checkpoint {args.checkpoint or 'tiny, trained here'}; {','.join(map(str, args.clients))} clients x {args.seconds:g} s, "
          f"--max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g} --threads {args.threads}; {len(texts)} WNUT-16 dev tweets in turn")  # fmt: skip
    results = [result for runtime in runtimes for result in serve_and_load(sources[runtime], runtime, args, texts)]

    import torch

    torch.set_num_threads(args.threads)
    for runtime in runtimes:
        served = max(result["rate"] for result in results if result["runtime"] == runtime)
        count = max(result["requests"] for result in results if result["runtime"] == runtime)
        ceiling = api_rate(sources[runtime], runtime, texts, count, args.max_batch)
        print(f"API ({runtime}): Tagger.tag of {count:,} of the same texts, batch_size {args.max_batch}, in this process: {ceiling:,.1f} texts/s; "
              f"the service's best gives {served / ceiling:.2f}x of it")  # fmt: skip
    if args.plot:
        plot(results, args.plot, f"seqkit serve, WNUT-16 tagger, {cpu.split(';')[0]}")
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
