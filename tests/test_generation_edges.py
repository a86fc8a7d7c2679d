"""Generation at its edges: every numeric setting has a range, checked before any work;
text streams as it is generated and Ctrl-C keeps what was printed; the prompt comes back
as typed; beam search refuses sampling settings and never loops on a phrase."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import seqkit
from helpers import MOBY, TINY_RECIPE, first_lines
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.errors import RecipeError
from seqkit.tokenize import decode, special_ids


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """The best/ of a tiny word-level LSTM language model, trained for a few steps."""
    from seqkit.train import train

    directory = tmp_path_factory.mktemp("lm")
    data = {}
    for split, count in (("train", 80), ("valid", 12)):
        data[split] = directory / f"{split}.txt"
        data[split].write_text(first_lines(MOBY / f"{split}.txt", count), encoding="utf-8")
    recipe = {**TINY_RECIPE, "output_dir": str(directory / "runs" / "lm"), "data": {split: str(path) for split, path in data.items()},
              "train": {**TINY_RECIPE["train"], "max_steps": 10, "eval_every": None}}  # fmt: skip
    path = directory / "lm.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return train(load_recipe(path), quiet=True).run_dir / "best"


@pytest.fixture(scope="module")
def lm(tiny_lm):
    return seqkit.LanguageModel.from_pretrained(tiny_lm, device="cpu")


def _forward_calls(model: torch.nn.Module) -> list:
    """A list that grows by one at each forward pass of ``model`` (for as long as the test runs)."""
    calls: list = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


# --- the prompt as typed ------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["The WHALE zzzqqq", 'Ahab said: "hello"  world', "zzzqqq", "the whale "])
def test_the_prompt_comes_back_as_typed_then_the_continuation(lm, tiny_lm, prompt):
    text = lm.generate(prompt, max_tokens=3, temperature=0)
    ids = special_ids(lm.tokenizer)
    from seqkit.decoding import sample_language_model

    greedy = sample_language_model(lm.model, [ids.eos, *lm.tokenizer.encode(prompt).ids], 3, temperature=0, banned_ids=(ids.pad, ids.unk))[0]
    # word-level: the continuation's words joined by spaces, one space after the prompt (its own, when it ends in one)
    assert text == prompt + ("" if prompt.endswith(" ") else " ") + decode(lm.tokenizer, greedy)
    assert "".join(lm.stream(prompt, max_tokens=3, temperature=0)) == text
    printed = CliRunner().invoke(main, ["generate", str(tiny_lm), "--prompt", prompt, "--max-tokens", "3", "--temperature", "0"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == text + "\n"


# --- streaming ------------------------------------------------------------------------------


def test_stream_yields_the_text_as_it_is_generated(lm, tiny_lm):
    calls = _forward_calls(lm.model)
    pieces = lm.stream("The Whale", max_tokens=100_000, temperature=0.8, seed=1)
    assert calls == []  # nothing runs before the first piece is asked for
    first = list(itertools.islice(pieces, 6))
    assert first[0] == "The Whale" and all(piece.startswith((" ", "\n")) for piece in first[1:])
    assert len(calls) <= 6  # five tokens took five steps (the prompt's pass included), not 100,000
    pieces.close()
    # joined, the pieces are generate's text; with num, (index, piece) for each text
    assert "".join(lm.stream("The Whale", max_tokens=20, seed=3)) == lm.generate("The Whale", max_tokens=20, seed=3)
    several = lm.generate("The Whale", max_tokens=8, seed=3, num=3)
    texts = ["", "", ""]
    for index, piece in lm.stream("The Whale", max_tokens=8, seed=3, num=3):
        texts[index] += piece
    assert texts == several and all(text.startswith("The Whale ") for text in texts)
    printed = CliRunner().invoke(main, ["generate", str(tiny_lm), "--prompt", "The Whale", "--max-tokens", "8", "--seed", "3", "--num", "3"])
    assert printed.exit_code == 0 and printed.output == "\n\n".join(several) + "\n"


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="needs POSIX signals")
def test_ctrl_c_keeps_what_was_printed_and_exits_130(tiny_lm):
    source = str(Path(seqkit.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "seqkit", "generate", str(tiny_lm), "--prompt", "The WHALE", "--max-tokens", "100000", "--seed", "1"]
    # a Ctrl-C reaches it even where this test runs with SIGINT ignored (a background job of a script)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        printed = b""
        while len(printed) < len("The WHALE") + 30:  # the prompt and several generated words are out
            chunk = os.read(process.stdout.fileno(), 4096)
            assert chunk, process.stderr.read().decode()
            printed += chunk
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    output, stderr = (printed + rest).decode(), stderr.decode()
    assert process.returncode == 130, stderr
    assert output.startswith("The WHALE ") and output.endswith("\n") and len(output) > len(printed.decode())  # kept, then a line break
    assert stderr.splitlines() == ["seqkit: interrupted"]


# --- ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [
    ("temperature", float("inf")), ("temperature", float("nan")), ("temperature", 100.5), ("max_tokens", 99999999999999999999),
    ("max_tokens", 100_001), ("top_k", 10**7), ("top_p", float("nan")), ("num", 1001), ("beam", 101), ("seed", 2**63),
])  # fmt: skip
def test_every_generation_setting_has_a_finite_range_checked_before_any_work(lm, name, value):
    calls = _forward_calls(lm.model)
    with pytest.raises(ValueError, match=rf"^{name}: expected "):
        lm.generate("the whale", **{name: value})
    with pytest.raises(ValueError, match=rf"^{name}: expected "):
        lm.stream("the whale", **{name: value})
    assert calls == []


@pytest.mark.parametrize("option, value", [
    ("--temperature", "inf"), ("--temperature", "nan"), ("--temperature", "101"), ("--max-tokens", "99999999999999999999"),
    ("--top-k", "10000000"), ("--top-p", "nan"), ("--num", "1001"), ("--beam", "101"), ("--no-repeat-ngram-size", "101"),
])  # fmt: skip
def test_cli_generate_checks_each_range_before_reading_the_checkpoint(tmp_path, option, value):
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "no-such-run"), option, value])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output and "not found" not in result.output
    assert "Traceback" not in result.output


def test_cli_help_gives_each_range():
    output = CliRunner().invoke(main, ["generate", "--help"]).output
    blocks = re.split(r"\n(?=  -)", output.partition("Options:")[2].strip("\n"))
    described = {block.split()[0]: " ".join(block.split()) for block in blocks}
    for option, documented in (("--num", "1<=x<=1000"), ("--max-tokens", "1<=x<=100000"), ("--temperature", "0.0<=x<=100.0"),
                               ("--top-k", "1<=x<=1000000"), ("--top-p", "0.0<x<=1.0"), ("--beam", "1<=x<=100"),
                               ("--no-repeat-ngram-size", "0<=x<=100"), ("--seed", "0<=x<=9223372036854775807")):  # fmt: skip
        assert documented in described[option], described[option]


def test_recipe_generate_settings_have_the_same_ranges(tmp_path):
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "data": {"train": str(MOBY / "train.txt")}}), encoding="utf-8")
    for key, value in (("temperature", ".inf"), ("temperature", ".nan"), ("max_tokens", "100001"), ("top_k", "10000000")):
        with pytest.raises(RecipeError, match=rf"generate\.{key}"):
            load_recipe(path, [f"generate.{key}={value}"])


# --- beam search -----------------------------------------------------------------------------


def test_beam_search_refuses_sampling_settings(lm, tmp_path):
    with pytest.raises(ValueError, match=r"^temperature, top_k: beam search samples nothing"):
        lm.generate("the whale", beam=5, temperature=0.8, top_k=40)
    with pytest.raises(ValueError, match=r"^top_p: beam search samples nothing"):
        lm.stream("the whale", beam=5, top_p=0.9)
    with pytest.raises(ValueError, match=r"^no_repeat_ngram_size: a setting of beam search"):
        lm.generate("the whale", no_repeat_ngram_size=2)
    runner = CliRunner()
    refused = runner.invoke(main, ["generate", str(tmp_path / "no-such-run"), "--beam", "5", "--temperature", "0.8", "--top-k", "40"])
    assert refused.exit_code == 2 and "--beam finds the most likely text and samples nothing: leave out --temperature, --top-k" in refused.output
    alone = runner.invoke(main, ["generate", str(tmp_path / "no-such-run"), "--no-repeat-ngram-size", "2"])
    assert alone.exit_code == 2 and "--no-repeat-ngram-size is a setting of beam search" in alone.output


def test_beam_search_never_repeats_an_ngram(lm):
    from seqkit.decoding import beam_language_model

    ids = special_ids(lm.tokenizer)
    context = [ids.eos, *lm.tokenizer.encode("the whale").ids]

    def repeats(tokens: list[int], size: int) -> int:
        ngrams = [tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)]
        return len(ngrams) - len(set(ngrams))

    looping = beam_language_model(lm.model, context, 30, 3, ids.eos, (ids.pad, ids.unk), no_repeat_ngram_size=0)
    assert repeats(context + looping, 3) > 0  # this barely trained model loops when allowed to
    for size in (2, 3):
        tokens = beam_language_model(lm.model, context, 30, 3, ids.eos, (ids.pad, ids.unk), no_repeat_ngram_size=size)
        assert tokens and repeats(context + tokens, size) == 0
    assert lm.generate("the whale", beam=3, max_tokens=30) == "the whale " + decode(lm.tokenizer, beam_language_model(
        lm.model, context, 30, 3, ids.eos, (ids.pad, ids.unk), no_repeat_ngram_size=3))  # fmt: skip


def test_beam_search_bans_repeats_of_the_prefix_too_and_ends_at_the_end_token():
    from seqkit.decoding import beam_search

    # a Markov "model": after 1 comes 2, after 2 comes 1 (p .6 each), the end token 0 is
    # less likely (.3); unbanned, the best path loops 1 2 1 2 ... to the length limit
    table = torch.tensor([[0.1, 0.8, 0.1], [0.3, 0.1, 0.6], [0.3, 0.6, 0.1]]).log()

    def step(tokens, state):
        return table[tokens], state

    def search(**settings) -> list[int]:
        [(best, _)] = beam_search(step, torch.tensor([1]), None, lambda state, rows: state, 12, beam=2, end_id=0, **settings)
        return best

    assert search() == [2, 1] * 6
    assert search(no_repeat_ngram_size=2) == [2, 1]  # then 2 would repeat (1, 2): the end is likelier than 1 again
    assert search(no_repeat_ngram_size=2, prefix=torch.tensor([[2]])) == [2]  # the prefix's (2, 1) counts too
