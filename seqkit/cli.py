"""The ``seqkit`` command: a thin click shell over the library.

Each command parses its arguments, makes one library call and prints the result. Errors
the user can fix (``SeqkitError``) print one line per problem on stderr and exit with
code 2; an interrupted training run exits with 130 after saving ``last/``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import click

from . import __version__


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        from .errors import SeqkitError
        from .train import TrainingInterrupted

        try:
            return super().invoke(ctx)
        except TrainingInterrupted as interrupted:
            click.echo(f"seqkit: {interrupted}", err=True)
            resume = ctx.meta.get("seqkit.resume_command")
            if resume:
                click.echo(f"seqkit: continue with: {resume}", err=True)
            ctx.exit(130)
        except SeqkitError as error:
            for line in str(error).splitlines():
                click.echo(f"seqkit: error: {line}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("seqkit: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="seqkit")
def main() -> None:
    """RNN, GRU and LSTM sequence models for text: train from a recipe, then use them."""


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe value (parsed as YAML); repeatable.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Write the run here instead of the recipe's output_dir.")
@click.option("--resume", is_flag=True, help="Continue the run in the output directory from its last/ checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in the output directory.")
@click.option("--quiet", is_flag=True, help="No progress bar and no per-evaluation lines.")
@click.option("--print-config", is_flag=True, help="Print the resolved recipe, every default included, and exit.")
def train(recipe: Path, overrides: tuple[str, ...], output_dir: Optional[str], resume: bool, overwrite: bool, quiet: bool, print_config: bool) -> None:
    """Train the model that RECIPE (a YAML file) describes."""
    from .config import dump_recipe, load_recipe
    from .train import train as run_training

    loaded = load_recipe(recipe, overrides, check_files=not print_config)
    if output_dir is not None:
        loaded = loaded.model_copy(update={"output_dir": output_dir})
    if print_config:
        click.echo(dump_recipe(loaded), nl=False)
        return
    command = ["seqkit", "train", str(recipe), *(part for item in overrides for part in ("--set", item))]
    command += ["--output-dir", loaded.output_dir, "--resume"]
    click.get_current_context().meta["seqkit.resume_command"] = shlex.join(command)
    result = run_training(loaded, resume=resume, overwrite=overwrite, quiet=quiet)
    if result.sample is not None and not quiet:
        click.echo(f"\nsample ({loaded.generate.max_tokens} tokens, temperature {loaded.generate.temperature}):\n{result.sample}\n")
    summary = [f"trained {result.steps:,} steps"]
    for split, metrics in (("valid", result.best_metrics), ("test", result.test_metrics)):
        if metrics:
            summary.append(f"{split} " + ", ".join(f"{name} {_number(value)}" for name, value in metrics.items() if name != "tokens"))
    click.echo("; ".join(summary))
    click.echo(f"best checkpoint: {result.run_dir / 'best'}   TensorBoard: tensorboard --logdir {result.run_dir.parent}")


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="The file to evaluate on.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of text.")
@click.option("--batch-size", default=10, show_default=True, type=click.IntRange(min=1))
def evaluate(checkpoint: Path, data_path: Path, as_json: bool, batch_size: int) -> None:
    """Evaluate CHECKPOINT on a data file (a language model: perplexity)."""
    from .api import load

    model = load(checkpoint)
    metrics = model.evaluate(data_path, batch_size=batch_size)
    if as_json:
        click.echo(json.dumps({"checkpoint": str(checkpoint), "data": str(data_path), **metrics}))
        return
    click.echo(
        f"{data_path}: perplexity {metrics['perplexity']:.2f} (loss {metrics['loss']:.4f} nats/token, "
        f"{metrics['tokens']:,} tokens; without the {metrics['unk_tokens']:,} <unk> targets: {metrics['perplexity_no_unk']:.2f})"
    )


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--prompt", default="", help="Text to continue.")
@click.option("--num", default=1, show_default=True, type=click.IntRange(min=1), help="How many texts.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Tokens to generate [default: the recipe's].")
@click.option("--temperature", type=click.FloatRange(min=0.0), help="Sampling temperature; 0 is greedy [default: the recipe's].")
@click.option("--top-k", type=click.IntRange(min=1), help="Sample among the K most likely tokens.")
@click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0, min_open=True), help="Sample within the nucleus of probability P.")
@click.option("--seed", type=int, help="Seed: the same seed gives the same text.")
def generate(checkpoint: Path, prompt: str, num: int, max_tokens: Optional[int], temperature: Optional[float], top_k: Optional[int], top_p: Optional[float], seed: Optional[int]) -> None:
    """Generate text from a language model CHECKPOINT."""
    from .api import LanguageModel, load

    model = load(checkpoint)
    if not isinstance(model, LanguageModel):
        raise click.UsageError(f"{checkpoint} holds a {model.task} model; generate needs a language model")
    texts = model.generate(prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, num=num)
    click.echo("\n\n".join(texts))


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
def info(checkpoint: Path) -> None:
    """Describe CHECKPOINT: task, sizes, tokenizer, metrics, version."""
    from .api import load
    from .model import count_parameters
    from .tokenize import tokenizer_kind

    model = load(checkpoint, device="cpu")
    recipe, meta = model.recipe, model.info
    m = recipe.model
    lines = [
        f"checkpoint   {checkpoint}",
        f"task         {recipe.task}",
        f"model        embedding {m.embedding_dim}, {m.encoder}{' ' + m.nonlinearity if m.encoder == 'rnn' else ''} "
        f"{m.num_layers} layer(s) x {m.hidden_size}{' bidirectional' if m.bidirectional else ''}"
        f"{', tied weights' if m.tie_weights else ''}, dropout {m.dropout}",
        f"parameters   {count_parameters(model.model):,}",
        f"tokenizer    {tokenizer_kind(model.tokenizer)}, vocabulary {model.tokenizer.get_vocab_size():,}",
    ]
    for split, metrics in (meta.get("metrics") or {}).items():
        lines.append(f"{split:<12} " + ", ".join(f"{name} {_number(value)}" for name, value in metrics.items()))
    lines.append(f"step         {meta.get('step', '?')} (epoch {meta.get('epoch', '?')})")
    lines.append(f"written by   seqkit {meta.get('seqkit_version', '?')}, format {meta.get('format_version', '?')}, {meta.get('created', '?')}")
    click.echo("\n".join(lines))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
