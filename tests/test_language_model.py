"""Training a language model end to end: loss falls, seeds repeat, checkpoints round-trip,
resume equals an uninterrupted run, every encoder kind trains."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import seqkit
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.errors import SeqkitError
from seqkit.tasks import LanguageModelTask
from seqkit.train import TrainingInterrupted, train

from helpers import run_python


def _records(run_dir: Path, split: str = "valid") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["split"] == split]


def test_loss_falls_and_run_directory_is_complete(tiny_recipe):
    result = train(load_recipe(tiny_recipe), quiet=True)
    run_dir = result.run_dir
    for name in ("config.yaml", "tokenizer.json", "metrics.jsonl", "tb", "best", "last"):
        assert (run_dir / name).exists(), name
    assert {p.name for p in (run_dir / "last").iterdir()} == {"config.yaml", "model.safetensors", "tokenizer.json", "trainer_state.pt"}
    assert "trainer_state.pt" not in {p.name for p in (run_dir / "best").iterdir()}
    records = _records(run_dir)
    uniform_guess = math.log(seqkit.load(run_dir / "best", device="cpu").tokenizer.get_vocab_size())
    assert records[0]["loss"] < uniform_guess - 1.0  # learned something in the first 10 steps
    assert records[-1]["loss"] < records[0]["loss"] - 0.1
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 0.5
    assert result.test_metrics["perplexity"] > 1 and result.sample.startswith("the whale")
    best = min(records, key=lambda r: r["perplexity"])
    assert result.best_metrics["perplexity"] == pytest.approx(best["perplexity"])


def test_tensorboard_shows_losses_lr_gradient_norm_throughput_and_hparams(tiny_recipe):
    run_dir = train(load_recipe(tiny_recipe, ["train.max_steps=10"]), quiet=True).run_dir
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec", "valid/loss", "valid/perplexity"} <= scalars
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(events.PluginTagToContent("hparams"))
    grad_norms = [event.value for event in events.Scalars("train/grad_norm")]
    assert all(value > 0 for value in grad_norms)


def test_same_seed_gives_identical_losses(tiny_recipe):
    first = train(load_recipe(tiny_recipe, ["train.max_steps=20", "output_dir=runs/a"]), quiet=True).run_dir
    second = train(load_recipe(tiny_recipe, ["train.max_steps=20", "output_dir=runs/b"]), quiet=True).run_dir
    assert _records(first) == _records(second)
    other = train(load_recipe(tiny_recipe, ["train.max_steps=20", "output_dir=runs/c", "seed=1"]), quiet=True).run_dir
    assert _records(first) != _records(other)


def test_checkpoint_gives_identical_logits_in_a_fresh_process(tiny_recipe):
    run_dir = train(load_recipe(tiny_recipe, ["train.max_steps=10"]), quiet=True).run_dir
    lm = seqkit.LanguageModel.from_pretrained(run_dir / "best", device="cpu")
    token_ids = torch.tensor([lm.tokenizer.encode("call me ishmael . some years ago").ids])
    with torch.inference_mode():
        expected = lm.model(token_ids)[0]
    code = (
        "import torch, seqkit\n"
        f"lm = seqkit.load({str(run_dir / 'best')!r}, device='cpu')\n"
        f"ids = torch.tensor([{token_ids[0].tolist()}])\n"
        "with torch.inference_mode():\n"
        "    logits = lm.model(ids)[0]\n"
        "print(repr(type(lm).__name__)); print(logits.flatten().tolist())\n"
    )
    out = run_python(code, tiny_recipe.parent).splitlines()
    assert out[0] == "'LanguageModel'"
    assert torch.equal(torch.tensor(json.loads(out[1])), expected.flatten())
    # save_pretrained writes a checkpoint that loads back to the same model
    lm.save_pretrained(tiny_recipe.parent / "copy")
    again = seqkit.load(tiny_recipe.parent / "copy", device="cpu")
    with torch.inference_mode():
        assert torch.equal(again.model(token_ids)[0], expected)


def _interrupt_at_step(monkeypatch, step: int) -> None:
    """Send this process a real SIGINT while training step ``step`` runs."""
    original = LanguageModelTask.loss
    calls = {"n": 0}

    def loss(self, model, chunk, carry):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, chunk, carry)

    monkeypatch.setattr(LanguageModelTask, "loss", loss)


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_resume_reaches_the_same_losses_as_an_uninterrupted_run(tiny_recipe, monkeypatch, schedule):
    overrides = [f"train.schedule={schedule}", "train.warmup_steps=0" if schedule == "plateau" else "train.warmup_steps=5",
                 "train.eval_every=7", "train.early_stopping=3"]  # fmt: skip
    straight = train(load_recipe(tiny_recipe, [*overrides, "output_dir=runs/straight"]), quiet=True).run_dir

    recipe = load_recipe(tiny_recipe, [*overrides, "output_dir=runs/interrupted"])
    with monkeypatch.context() as patch:
        _interrupt_at_step(patch, 11)  # mid-epoch, between evaluations: state and RNG must carry over
        with pytest.raises(TrainingInterrupted) as stopped:
            train(recipe, quiet=True)
    assert stopped.value.step == 11
    resumed = train(recipe, resume=True, quiet=True).run_dir
    assert _records(resumed) == _records(straight)
    assert _records(resumed, "test") == _records(straight, "test")
    torch.testing.assert_close(
        seqkit.load(resumed / "last", device="cpu").model.state_dict(),
        seqkit.load(straight / "last", device="cpu").model.state_dict(),
        rtol=0, atol=0,
    )


def test_existing_run_is_never_overwritten_by_accident(tiny_recipe):
    recipe = load_recipe(tiny_recipe, ["train.max_steps=5"])
    train(recipe, quiet=True)
    with pytest.raises(SeqkitError, match="already holds a run"):
        train(recipe, quiet=True)
    train(recipe, quiet=True, overwrite=True)
    with pytest.raises(SeqkitError, match="nothing to resume"):
        train(load_recipe(tiny_recipe, ["output_dir=runs/fresh"]), resume=True, quiet=True)
    with pytest.raises(SeqkitError, match="model.hidden_size: the run was trained with 24"):
        train(load_recipe(tiny_recipe, ["train.max_steps=5", "model.hidden_size=32"]), resume=True, quiet=True)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.encoder=rnn", "model.nonlinearity=tanh", "model.num_layers=1"],
        ["model.encoder=rnn", "model.nonlinearity=relu", "model.num_layers=2"],
        ["model.encoder=gru", "model.num_layers=3"],
        ["model.encoder=lstm", "model.num_layers=4", "model.tie_weights=true"],
        ["model.encoder=gru", "model.num_layers=1", "model.tie_weights=true", "model.embedding_dim=24", "train.optimizer=sgd",
         "train.momentum=0.9", "train.lr=0.5", "train.weight_decay=1e-5"],
        ["model.encoder=lstm", "model.num_layers=1", "train.optimizer=adamw", "train.weight_decay=0.01", "train.schedule=none"],
    ],
    ids=["rnn-tanh-1", "rnn-relu-2", "gru-3", "lstm-4-tied-projected", "gru-1-tied-sgd", "lstm-1-adamw"],
)
def test_every_encoder_kind_trains_and_reloads(tiny_recipe, overrides):
    result = train(load_recipe(tiny_recipe, [*overrides, "train.epochs=1", "train.eval_every=null"]), quiet=True)
    lm = seqkit.load(result.run_dir / "best", device="cpu")
    encoder = lm.model.encoder
    settings = dict(item.split("=") for item in overrides)
    assert encoder.cell == settings["model.encoder"] and encoder.num_layers == int(settings["model.num_layers"])
    if "model.nonlinearity" in settings:
        assert encoder.rnn.nonlinearity == settings["model.nonlinearity"]
    if encoder.num_layers > 1:
        assert encoder.rnn.dropout == pytest.approx(0.2)
    if "model.tie_weights=true" in overrides:
        assert lm.model.head.output.weight is lm.model.embedding.weight
    loss = result.best_metrics["loss"]
    assert 0 < loss < 20


def test_checkpoint_that_does_not_fit_its_config_is_named(tiny_recipe):
    run_dir = train(load_recipe(tiny_recipe, ["train.max_steps=3"]), quiet=True).run_dir
    best = run_dir / "best"
    config = (best / "config.yaml").read_text()
    (best / "config.yaml").write_text(config.replace("hidden_size: 24", "hidden_size: 32"))
    with pytest.raises(SeqkitError, match=r"model.safetensors: does not fit config.yaml \(wrong shape: .*\(config.yaml builds"):
        seqkit.load(best)
    (best / "config.yaml").write_text(config)
    weights = (best / "model.safetensors").read_bytes()
    (best / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(SeqkitError, match="model.safetensors: unreadable or truncated"):
        seqkit.load(best)


def test_early_stopping_ends_a_run_that_stopped_improving(tiny_recipe):
    # an lr far below float precision leaves the weights, and so the metric, unchanged
    recipe = load_recipe(tiny_recipe, ["train.optimizer=sgd", "train.lr=1e-30", "train.eval_every=2", "train.early_stopping=2"])
    result = train(recipe, quiet=True)
    assert result.steps == 6
    assert [record["best"] for record in _records(result.run_dir)] == [True, False, False]


def test_recipe_may_name_an_existing_tokenizer(tiny_recipe):
    first = train(load_recipe(tiny_recipe, ["train.max_steps=2", "tokenizer.kind=char"]), quiet=True).run_dir
    second = train(load_recipe(tiny_recipe, ["train.max_steps=2", f"tokenizer.path={first / 'tokenizer.json'}", "output_dir=runs/reuse"]), quiet=True)
    assert (second.run_dir / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()
    assert seqkit.load(second.run_dir / "best", device="cpu").tokenizer.encode("ab").tokens == ["a", "b"]


def test_beam_search_continues_a_prompt(tiny_recipe):
    from seqkit.decoding import beam_language_model, generate_text, sample_language_model
    from seqkit.tokenize import special_ids

    run_dir = train(load_recipe(tiny_recipe, ["train.max_steps=20"]), quiet=True).run_dir
    lm = seqkit.LanguageModel.from_pretrained(run_dir / "best", device="cpu")
    ids = special_ids(lm.tokenizer)
    context = [ids.eos, *lm.tokenizer.encode("the whale").ids]
    greedy = sample_language_model(lm.model, context, 12, temperature=0, banned_ids=(ids.pad, ids.unk))[0]
    greedy = greedy[: greedy.index(ids.eos)] if ids.eos in greedy else greedy
    assert beam_language_model(lm.model, context, 12, 1, ids.eos, (ids.pad, ids.unk)) == greedy  # beam 1 is greedy
    text = lm.generate("the whale", beam=4, max_tokens=12)
    assert text.startswith("the whale") and text == generate_text(lm.model, lm.tokenizer, "the whale", 12, beam=4)[0]
    with pytest.raises(ValueError, match="leave num out"):
        lm.generate("the whale", beam=4, num=2)


# --- the adaptive softmax (model.output: adaptive) ---------------------------------------


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_adaptive_softmax_is_an_exact_distribution_and_its_nll_reads_it(tied):
    from seqkit.heads import LanguageModelHead

    torch.manual_seed(0)
    embedding = torch.nn.Parameter(torch.randn(60, 8)) if tied else None
    head = LanguageModelHead(12, 60, pad_id=0, tied_embedding=embedding, cutoffs=[7, 25]).eval()
    states = torch.randn(3, 9, 12)
    log_probs = head(states)  # (batch, time, vocab)
    assert log_probs.shape == (3, 9, 60)
    assert torch.allclose(log_probs.logsumexp(-1), torch.zeros(3, 9), atol=1e-5)  # every step sums to one
    targets = torch.tensor([[0, 1, 6, 7, 24, 25, 59, 3, 30]] * 3)  # padding, shortlist, both clusters, their edges
    expected = -log_probs.gather(-1, targets[..., None]).squeeze(-1).masked_fill(targets == 0, 0.0)
    assert torch.allclose(head.nll(states, targets), expected, atol=1e-5)
    # the token vectors are one matrix: the embedding's, when tied
    assert (head.output.weight is embedding) if tied else head.output.weight.shape == (60, 8 if tied else 12)


def test_adaptive_softmax_scores_a_cluster_only_for_its_targets_and_every_parameter_gets_a_gradient():
    """A batch without rare targets never touches the clusters' token vectors, and every
    parameter still gets a gradient (DDP expects one for each, at every step)."""
    from seqkit.heads import LanguageModelHead

    torch.manual_seed(0)
    head = LanguageModelHead(12, 60, cutoffs=[7, 25])
    head.nll(torch.randn(2, 5, 12), torch.randint(1, 7, (2, 5))).sum().backward()  # shortlist targets only
    gradients = {name: parameter.grad for name, parameter in head.named_parameters()}
    assert all(gradient is not None for gradient in gradients.values()), [name for name, g in gradients.items() if g is None]
    assert gradients["output.weight"][7:].abs().sum() == 0 and gradients["output.weight"][:7].abs().sum() > 0
    assert gradients["clusters.weight"].abs().sum() > 0  # "not in a cluster" is learned too


def test_adaptive_output_trains_reloads_and_scores_exactly(tiny_recipe):
    overrides = ["model.output=adaptive", "model.tie_weights=true", "model.embedding_dim=24", "train.max_steps=20"]
    result = train(load_recipe(tiny_recipe, overrides), quiet=True)
    records = _records(result.run_dir)
    assert records[-1]["loss"] < records[0]["loss"]
    lm = seqkit.load(result.run_dir / "best", device="cpu")
    head = lm.model.head
    vocab_size = lm.tokenizer.get_vocab_size()
    assert head.bounds[:-1] == [64 * 4**power for power in range(len(head.bounds) - 1)] and head.bounds[-1] == vocab_size
    assert len(head.bounds) > 1 and head.output.weight is lm.model.embedding.weight
    # the perplexity evaluation reports is the full distribution's, read at each target
    token_ids = torch.tensor([lm.tokenizer.encode("call me ishmael . some years ago never mind how long").ids])
    with torch.inference_mode():
        log_probs = lm.model(token_ids[:, :-1])[0].log_softmax(-1)
        nll = -log_probs.gather(-1, token_ids[:, 1:, None]).mean().item()
        states, _, _ = lm.model.encode(token_ids[:, :-1])
        assert head.nll(states, token_ids[:, 1:]).mean().item() == pytest.approx(nll, rel=1e-5)
    assert lm.evaluate("data/test.txt")["loss"] == pytest.approx(result.test_metrics["loss"], rel=1e-6)
    assert lm.generate("the whale", max_tokens=5, seed=1).startswith("the whale")
    assert lm.generate("the whale", beam=3, max_tokens=5).startswith("the whale")
    info = CliRunner().invoke(main, ["info", str(result.run_dir / "best")])
    assert info.exit_code == 0 and f"adaptive softmax (cut at {', '.join(f'{cutoff:,}' for cutoff in head.bounds[:-1])})" in info.output


def test_adaptive_cutoffs_are_checked_against_the_vocabulary(tiny_recipe):
    with pytest.raises(SeqkitError, match=r"model\.adaptive_cutoffs: \[10, 100000\] must stay below the vocabulary size, "):
        train(load_recipe(tiny_recipe, ["model.output=adaptive", "model.adaptive_cutoffs=[10, 100000]"]), quiet=True)
    with pytest.raises(SeqkitError, match=r"model\.adaptive_cutoffs: cut the vocabulary for model\.output: adaptive"):
        load_recipe(tiny_recipe, ["model.adaptive_cutoffs=[10, 20]"])
    with pytest.raises(SeqkitError, match=r"model\.adaptive_cutoffs: token ids that strictly increase"):
        load_recipe(tiny_recipe, ["model.output=adaptive", "model.adaptive_cutoffs=[20, 10]"])
