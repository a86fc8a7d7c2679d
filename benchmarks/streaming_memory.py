"""Peak memory of a streamed language model (``data.streaming: true``) on a 100 MB and a
2 GB training file: streaming should make it independent of the corpus size.

    python benchmarks/streaming_memory.py                    # 100 MB and 2 GB, 100 steps each
    python benchmarks/streaming_memory.py --steps 40 --sizes-mb 100 400 --in-memory

Builds each file by repeating ``data/moby-dick/train.txt`` into a temporary folder (removed
at the end), then trains ``recipes/lm.yaml`` on it for a fixed number of steps in a fresh
process -- tokenizer from the default ``tokenizer.sample_mb`` sample, validation on the
shipped validation chapters in memory, one evaluation at the end, no test split -- and
reads that process's peak resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` in a
small parent process of its own, so each measurement is one run's). Prints the peaks, the
ratio of the largest file's to the smallest's against the 1.2x target, and the wall times.
``--in-memory`` also trains on the smallest file read whole (``data.streaming: false``),
for comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "data" / "moby-dick" / "train.txt"
TARGET_RATIO = 1.2
# Runs a command and prints the peak RSS of its process tree's largest process, in KiB.
PEAK_RSS = "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"


def build_corpus(path: Path, megabytes: int) -> int:
    """``path`` filled with copies of the shipped training text up to ``megabytes`` MB."""
    text = SOURCE.read_bytes()
    if not text.endswith(b"\n"):
        text += b"\n"
    size, target = 0, megabytes * 1_000_000
    with path.open("wb") as handle:
        while size + len(text) <= target:
            handle.write(text)
            size += len(text)
        tail = text[: target - size]
        tail = tail[: tail.rfind(b"\n") + 1]  # whole lines only
        handle.write(tail)
    return size + len(tail)


def measure(corpus: Path, steps: int, work: Path, streaming: bool) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of ``seqkit train recipes/lm.yaml`` on ``corpus``."""
    output = work / f"run-{corpus.stem}-{'stream' if streaming else 'memory'}"
    overrides = [
        f"data.train={corpus}", f"data.valid={ROOT / 'data' / 'moby-dick' / 'valid.txt'}", "data.test=null",
        f"data.streaming={'true' if streaming else 'false'}", f"train.max_steps={steps}", f"train.eval_every={steps}",
        "train.device=cpu",
    ]  # fmt: skip
    command = [sys.executable, "-m", "seqkit", "train", str(ROOT / "recipes" / "lm.yaml"), "--quiet", "--output-dir", str(output)]
    command += [part for item in overrides for part in ("--set", item)]
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf-cache"), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"training on {corpus} failed:\n{completed.stderr[-3000:]}")
    shutil.rmtree(output, ignore_errors=True)
    return int(completed.stdout.strip().splitlines()[-1]) / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 2000], help="corpus sizes in MB (10^6 bytes)")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run (batch 32 x BPTT 35)")
    parser.add_argument("--in-memory", action="store_true", help="also train on the smallest corpus read whole")
    parser.add_argument("--tmp", default=None, help="where the corpora go (default: the system's temporary folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="seqkit-streaming-", dir=args.tmp))
    rows = []
    try:
        for megabytes in sorted(args.sizes_mb):
            corpus = work / f"corpus-{megabytes}mb.txt"
            size = build_corpus(corpus, megabytes)
            peak, seconds = measure(corpus, args.steps, work, streaming=True)
            rows.append((f"{size / 1e6:,.0f} MB", "streamed", peak, seconds))
            print(f"{size / 1e6:>8,.0f} MB  streamed   peak RSS {peak:8,.0f} MB  {seconds:6.1f} s", flush=True)
            if args.in_memory and megabytes == min(args.sizes_mb):
                peak, seconds = measure(corpus, args.steps, work, streaming=False)
                rows.append((f"{size / 1e6:,.0f} MB", "in memory", peak, seconds))
                print(f"{size / 1e6:>8,.0f} MB  in memory  peak RSS {peak:8,.0f} MB  {seconds:6.1f} s", flush=True)
            corpus.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    streamed = [row for row in rows if row[1] == "streamed"]
    ratio = streamed[-1][2] / streamed[0][2]
    verdict = "within" if ratio <= TARGET_RATIO else "ABOVE"
    print(f"\npeak RSS {streamed[-1][0]} / {streamed[0][0]}: {ratio:.3f}x ({verdict} the {TARGET_RATIO}x target); {args.steps} steps each")


if __name__ == "__main__":
    main()
