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
            summary.append(f"{split} " + ", ".join(f"{name} {_number(value)}" for name, value in metrics.items() if isinstance(value, float)))
    click.echo("; ".join(summary))
    click.echo(f"best checkpoint: {result.run_dir / 'best'}   TensorBoard: tensorboard --logdir {result.run_dir.parent}")


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="The file to evaluate on.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of text.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Sequences (or rows, for a language model) per batch.")
def evaluate(checkpoint: Path, data_path: Path, as_json: bool, batch_size: Optional[int]) -> None:
    """Evaluate CHECKPOINT on a data file: perplexity for a language model, entity
    precision, recall and F1 (per type and micro) for a tagger."""
    from .api import load

    model = load(checkpoint)
    metrics = model.evaluate(data_path, **({"batch_size": batch_size} if batch_size else {}))
    if as_json:
        click.echo(json.dumps({"checkpoint": str(checkpoint), "data": str(data_path), **metrics}))
    elif model.task == "language_model":
        click.echo(
            f"{data_path}: perplexity {metrics['perplexity']:.2f} (loss {metrics['loss']:.4f} nats/token, "
            f"{metrics['tokens']:,} tokens; without the {metrics['unk_tokens']:,} <unk> targets: {metrics['perplexity_no_unk']:.2f})"
        )
    else:
        rows = [(name, scores) for name, scores in metrics["per_type"].items()] + [("micro", metrics)]
        width = max(len(name) for name, _ in rows)
        click.echo(f"{data_path}: {metrics['sentences']:,} sentences")
        click.echo(f"{'type':<{width}}  precision  recall      f1  entities")
        for name, scores in rows:
            click.echo(f"{name:<{width}}  {scores['precision']:9.4f}  {scores['recall']:6.4f}  {scores['f1']:6.4f}  {scores['entities']:8,}")


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("input_file", metavar="[INPUT|-]", default="-", type=click.File("r", encoding="utf-8"))
@click.option("--format", "output_format", type=click.Choice(["text", "jsonl", "conll"]), default="text", show_default=True,
              help="text: entities marked [like this](label); jsonl: tokens, tags and spans; conll: a token and its tag a line.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
def predict(checkpoint: Path, input_file, output_format: str, batch_size: int) -> None:
    """Tag INPUT (one text a line, or JSON Lines with "text" or "tokens"; - for stdin)."""
    from .api import Tagger, load
    from .errors import DataError

    model = load(checkpoint)
    if not isinstance(model, Tagger):
        raise click.UsageError(f"{checkpoint} holds a {model.task} model; predict needs a tagger (a language model generates: seqkit generate)")
    name = getattr(input_file, "name", "-")
    is_jsonl = str(name).endswith(".jsonl")
    chunk: list = []

    def flush() -> None:
        for doc in model.tag(chunk, batch_size=batch_size) if chunk else []:
            click.echo(_format_doc(doc, output_format))
        chunk.clear()

    for number, line in enumerate(input_file, start=1):
        line = line.rstrip("\r\n")
        if is_jsonl and line.strip():
            try:
                record = json.loads(line)
                item = record["tokens"] if "tokens" in record else record["text"]
            except (ValueError, KeyError, TypeError):
                raise DataError(name, 'expected a JSON object with "text" or "tokens"', line=number) from None
            if not (isinstance(item, str) or (isinstance(item, list) and all(isinstance(word, str) for word in item))):
                raise DataError(name, '"text" must be a string and "tokens" a list of strings', line=number)
            chunk.append(item)
        else:
            chunk.append(line)
        if len(chunk) >= 16 * batch_size:  # stream: tag a chunk, print it, read on
            flush()
    flush()


def _format_doc(doc, output_format: str) -> str:
    if output_format == "jsonl":
        return json.dumps(doc.to_json(), ensure_ascii=False)
    if output_format == "conll":
        return "".join(f"{token}\t{tag}\n" for token, tag in zip(doc.tokens, doc.tags))
    marked, cursor = [], 0
    for span in doc.spans:
        marked += [doc.text[cursor : span.start], f"[{span.text}]({span.label})"]
        cursor = span.end
    return "".join(marked) + doc.text[cursor:]


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
        f"{', tied weights' if m.tie_weights else ''}{', CRF' if m.crf else ''}"
        f"{', char ' + m.char_features if m.char_features != 'none' else ''}, dropout {m.dropout}",
        f"parameters   {count_parameters(model.model):,}",
        f"tokenizer    {tokenizer_kind(model.tokenizer)}, vocabulary {model.tokenizer.get_vocab_size():,}",
    ]
    if model.labels is not None:
        types = sorted({tag.partition("-")[2] for tag in model.labels.labels} - {""})
        lines.append(f"labels       {len(model.labels.labels)} tags ({model.labels.scheme}): {', '.join(types)}")
    for split, metrics in (meta.get("metrics") or {}).items():
        lines.append(f"{split:<12} " + ", ".join(f"{name} {_number(value)}" for name, value in metrics.items() if not isinstance(value, dict)))
    lines.append(f"step         {meta.get('step', '?')} (epoch {meta.get('epoch', '?')})")
    lines.append(f"written by   seqkit {meta.get('seqkit_version', '?')}, format {meta.get('format_version', '?')}, {meta.get('created', '?')}")
    click.echo("\n".join(lines))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
