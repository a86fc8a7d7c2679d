"""The ``seqkit`` command: a thin click shell over the library.

Each command parses its arguments, makes one library call and prints the result. Errors
the user can fix (``SeqkitError``) print one line per problem on stderr and exit with
code 2; an interrupted training run exits with 130 after saving ``last/``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import click

from . import __version__


class _Group(click.Group):
    """Turns every way a command can end badly into one line on stderr: a usage error
    (an unknown option or command, a value out of range) or a ``SeqkitError`` exits 2 as
    ``seqkit: error: ...``; Ctrl-C exits 130. Nothing heavy is imported before the
    arguments are parsed, so ``--help`` and a typo answer at once."""

    def make_context(self, info_name: Optional[str], args: list[str], parent: Optional[click.Context] = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as error:  # an unknown option of the group itself
            _usage_error(error)

    def invoke(self, ctx: click.Context) -> Any:
        from .errors import SeqkitError

        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # raised while a subcommand parses its arguments, or by a command
            _usage_error(error)
        except SeqkitError as error:
            from .train import TrainingInterrupted  # imported already when training raised it

            if isinstance(error, TrainingInterrupted):
                if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 tells
                    ctx.exit(130)
                click.echo(f"seqkit: {error}", err=True)
                resume = ctx.meta.get("seqkit.resume_command")
                if resume:
                    click.echo(f"seqkit: continue with: {resume}", err=True)
                ctx.exit(130)
            for line in str(error).splitlines():
                click.echo(f"seqkit: error: {line}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("seqkit: interrupted", err=True)
            ctx.exit(130)


def _usage_error(error: click.UsageError) -> NoReturn:
    """Print a click usage error as one line naming where ``--help`` says more; exit 2."""
    if isinstance(error, click.exceptions.NoArgsIsHelpError):  # plain ``seqkit``: the help, as ``seqkit --help``
        click.echo(error.ctx.get_help())
        sys.exit(0)
    message = " ".join(error.format_message().split()).rstrip(".")
    if _is_parse_error(error):  # what the arguments should have been is in --help; a command's own refusal says the fix itself
        message += f" (see {error.ctx.command_path if error.ctx is not None else 'seqkit'} --help)"
    click.echo(f"seqkit: error: {message}", err=True)
    sys.exit(2)


def _is_parse_error(error: click.UsageError) -> bool:
    """Whether click raised ``error`` parsing the command line (rather than a command raising it)."""
    parsing = (click.BadParameter, click.NoSuchOption, click.BadOptionUsage, click.BadArgumentUsage, click.MissingParameter)
    return isinstance(error, parsing) or error.message.startswith(("No such command", "Got unexpected extra argument"))


def _check_encoding(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from .config import is_text_encoding

    if not is_text_encoding(value):
        raise click.BadParameter(f"{value!r} is not a text encoding Python knows (e.g. utf-8, latin-1, cp1252, utf-16)")
    return value


_encoding_option = click.option("--encoding", default="utf-8", show_default=True, callback=_check_encoding,
                                help="The input's text encoding: a Python codec name such as latin-1, cp1252 or utf-16.")  # fmt: skip


_runtime_option = click.option("--runtime", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
                               help="onnx: CHECKPOINT is a directory that seqkit export --format onnx wrote, run with ONNX Runtime on the CPU.")  # fmt: skip


def _threads_option(command):
    return click.option("--threads", type=click.IntRange(1, 1024),
                        help="CPU threads to compute with [default: the cores other processes leave free; OMP_NUM_THREADS if set].")(command)  # fmt: skip


def _use_threads(threads: Optional[int]) -> None:
    """Set torch's CPU threads for an inference command (training reads train.threads)."""
    from .runtime import choose_threads

    choose_threads(threads if threads is not None else "auto")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="seqkit")
def main() -> None:
    """RNN, GRU and LSTM sequence models for text: train from a recipe, then use them.

    A CHECKPOINT is a checkpoint directory (runs/NAME/best), a run directory (runs/NAME:
    its best/), an archive of a checkpoint that seqkit export wrote, the http(s) URL of
    such an archive (URL#sha256=HEX verifies it), or hf://USER/NAME[@REVISION] on the
    Hugging Face Hub.
    """


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe value (parsed as YAML); repeatable.")
@click.option("--output-dir", type=click.Path(), help="Write the run here instead of the recipe's output_dir.")  # a file there: one line from train
@click.option("--resume", is_flag=True, help="Continue the run in the output directory from its last/ checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in the output directory, once the new run has made its first step.")
@click.option("--quiet", is_flag=True, help="No progress bar and no per-evaluation lines.")
@click.option("--print-config", is_flag=True, help="Print the resolved recipe, every default included, and exit.")
@click.option("--threads", type=click.IntRange(1, 1024), help="CPU threads to train with (the same as --set train.threads=N) [default: the recipe's].")
def train(recipe: Path, overrides: tuple[str, ...], output_dir: Optional[str], resume: bool, overwrite: bool, quiet: bool, print_config: bool,
          threads: Optional[int]) -> None:  # fmt: skip
    """Train the model that RECIPE (a YAML file) describes.

    \b
    Examples:
      seqkit train recipes/lm.yaml
      seqkit train recipes/ner.yaml --set train.epochs=5 --set model.encoder=gru --output-dir runs/ner-gru
      seqkit train recipes/lm.yaml --resume          (after Ctrl-C: continues from runs/lm/last)
      torchrun --nproc_per_node 2 -m seqkit train recipes/lm.yaml     (DistributedDataParallel)

    Ctrl-C or SIGTERM saves last/ and exits 130; a bad recipe or data file exits 2
    naming the file and line or the key.
    """
    from .config import dump_recipe, load_recipe
    from .train import train as run_training

    if output_dir is not None and not output_dir.strip():
        raise click.BadParameter("an empty path", param_hint="--output-dir")
    if threads is not None:
        overrides = (*overrides, f"train.threads={threads}")
    loaded = load_recipe(recipe, overrides, check_files=not print_config)
    if output_dir is not None:
        loaded = loaded.model_copy(update={"output_dir": output_dir})
    if print_config:
        click.echo(dump_recipe(loaded), nl=False)
        return
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # under torchrun: resume with as many processes
    launcher = ["torchrun", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", str(processes)), "-m", "seqkit"] if processes > 1 else ["seqkit"]
    command = [*launcher, "train", str(recipe), *(part for item in overrides for part in ("--set", item))]
    command += ["--output-dir", loaded.output_dir, "--resume"]
    click.get_current_context().meta["seqkit.resume_command"] = shlex.join(command)
    result = run_training(loaded, resume=resume, overwrite=overwrite, quiet=quiet)
    if result.rank != 0:  # under torchrun, rank 0 reports
        return
    if result.sample is not None and not quiet:
        click.echo(f"\nsample ({loaded.generate.max_tokens} tokens, temperature {loaded.generate.temperature}):\n{result.sample}\n")
    summary = [f"trained {result.steps:,} step{'s' if result.steps != 1 else ''}"]
    if result.skipped_batches:
        summary[0] += f" ({result.skipped_batches:,} batches skipped: NaN or infinite loss or gradient)"
    for split, metrics in (("valid", result.best_metrics), ("test", result.test_metrics)):
        if metrics:
            summary.append(f"{split} " + ", ".join(f"{name} {_number(value)}" for name, value in metrics.items() if isinstance(value, float)))
    click.echo("; ".join(summary))
    click.echo(f"best checkpoint: {result.run_dir / 'best'}   TensorBoard: tensorboard --logdir {result.run_dir.parent}")


@main.command(name="eval")
@click.argument("checkpoint")  # a string: a URL is no path (pathlib folds its "//")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="The file to evaluate on.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of text.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), help="Sequences (or rows, for a language model) per batch.")
@click.option("--beam", type=click.IntRange(1, 100), help="seq2seq: beam search of this width instead of greedy decoding.")
@_runtime_option
@_encoding_option
@_threads_option
def evaluate(checkpoint: str, data_path: Path, as_json: bool, batch_size: Optional[int], beam: Optional[int], runtime: str, encoding: str,
             threads: Optional[int]) -> None:  # fmt: skip
    """Evaluate CHECKPOINT on a data file: perplexity for a language model; entity
    precision, recall and F1 (per type and micro) and token accuracy for a tagger (plain
    tags: token accuracy, on unseen words too, and per-tag scores); accuracy, macro-F1 and
    per-class scores for a classifier; MAE and RMSE (and the mean baseline's) for regression."""
    from .api import load
    from .errors import NotTextError

    _use_threads(threads)  # ONNX Runtime computes with as many threads
    model = load(checkpoint, runtime=runtime)
    if beam is not None and model.task != "seq2seq":
        raise click.UsageError("--beam is for seq2seq models")
    options = {"batch_size": batch_size} if batch_size else {}
    try:
        metrics = model.evaluate(data_path, encoding=encoding, **options, **({"beam": beam} if beam else {}))
    except NotTextError as error:  # the API names its encoding argument; here this option sets it
        raise error.naming("--encoding") from None
    if as_json:
        click.echo(json.dumps({"checkpoint": str(checkpoint), "data": str(data_path), **metrics}))
    elif model.task == "language_model":
        read_as = " (the words of a CoNLL file, a sentence a line)" if data_path.name.endswith((".conll", ".conll.gz")) else ""
        click.echo(
            f"{data_path}{read_as}: perplexity {metrics['perplexity']:.2f} (loss {metrics['loss']:.4f} nats/token, "
            f"{metrics['tokens']:,} tokens; without the {metrics['unk_tokens']:,} <unk> targets: {metrics['perplexity_no_unk']:.2f})"
        )
    elif model.task == "seq2seq":
        decoding = f"beam {beam}" if beam else "greedy"
        click.echo(f"{data_path}: {metrics['sequences']:,} sequences, {decoding} decoding; "
                   f"token error rate (PER) {metrics['per']:.2%}, sequence error rate (WER) {metrics['wer']:.2%}")  # fmt: skip
    elif model.task == "classification":
        rows = list(metrics["per_class"].items())
        width = max(len("class"), *(len(name) for name, _ in rows))
        click.echo(f"{data_path}: {metrics['examples']:,} examples; accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}")
        click.echo(f"{'class':<{width}}  precision  recall      f1  examples")
        for name, scores in rows:
            click.echo(f"{name:<{width}}  {scores['precision']:9.4f}  {scores['recall']:6.4f}  {scores['f1']:6.4f}  {scores['examples']:8,}")
    elif model.task == "regression":
        click.echo(f"{data_path}: {metrics['examples']:,} examples; MAE {_number(metrics['mae'])}, RMSE {_number(metrics['rmse'])} "
                   f"(always predicting the training mean: MAE {_number(metrics['baseline_mae'])}, RMSE {_number(metrics['baseline_rmse'])})")  # fmt: skip
        for name, scores in metrics.get("per_output", {}).items():
            click.echo(f"  {name}: MAE {_number(scores['mae'])}, RMSE {_number(scores['rmse'])}")
    elif "per_tag" in metrics:  # plain tags (data.scheme: none): token accuracy, then each tag, the most frequent first
        rows = sorted(metrics["per_tag"].items(), key=lambda row: (-row[1]["tokens"], row[0]))
        width = max(len("tag"), *(len(name) for name, _ in rows))
        click.echo(f"{data_path}: {metrics['sentences']:,} sentences, {metrics['tokens']:,} tokens; token accuracy {metrics['accuracy']:.4f}, "
                   f"on the {metrics['unseen_tokens']:,} words outside the vocabulary {metrics['unseen_accuracy']:.4f}; macro-F1 {metrics['macro_f1']:.4f}"
                   + (f" (except O {metrics['macro_f1_except_o']:.4f})" if "O" in metrics["per_tag"] and "macro_f1_except_o" in metrics else ""))  # fmt: skip
        click.echo(f"{'tag':<{width}}  precision  recall      f1    tokens")
        for name, scores in rows:
            click.echo(f"{name:<{width}}  {scores['precision']:9.4f}  {scores['recall']:6.4f}  {scores['f1']:6.4f}  {scores['tokens']:8,}")
    else:
        rows = [(name, scores) for name, scores in metrics["per_type"].items()] + [("micro", metrics)]
        width = max(len(name) for name, _ in rows)
        click.echo(f"{data_path}: {metrics['sentences']:,} sentences, {metrics['tokens']:,} tokens; token accuracy {metrics['accuracy']:.4f}")
        click.echo(f"{'type':<{width}}  precision  recall      f1  entities")
        for name, scores in rows:
            click.echo(f"{name:<{width}}  {scores['precision']:9.4f}  {scores['recall']:6.4f}  {scores['f1']:6.4f}  {scores['entities']:8,}")


@main.command()
@click.argument("checkpoint")
@click.argument("input_path", metavar="[INPUT|-]", default="-")
@click.option("--format", "output_format", type=click.Choice(["text", "jsonl", "conll"]), default="text", show_default=True,
              help="text: a tagger marks entities [like this](label) (plain tags: word/TAG), a classifier prints label, probability and text, "
                   "a regression model its value(s) and text; jsonl: one JSON object per input; conll (taggers): a token and its tag a line.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 10_000), help="Inputs per batch.")
@click.option("--beam", type=click.IntRange(1, 100), help="seq2seq: beam search of this width instead of greedy decoding.")
@_runtime_option
@_encoding_option
@_threads_option
def predict(checkpoint: str, input_path: str, output_format: str, batch_size: int, beam: Optional[int], runtime: str, encoding: str,
            threads: Optional[int]) -> None:  # fmt: skip
    """Tag, classify, score or transduce each input of INPUT with CHECKPOINT: one text a line
    (a blank line is an empty text, so outputs line up with inputs), or JSON Lines (a .jsonl
    or .jsonl.gz file) with the text in "text" (or the recipe's data.input_field; a tagger
    also takes pre-tokenized "tokens"); - reads stdin. UTF-8 unless --encoding says
    otherwise. Inputs are read and predicted in batches, so a large file streams."""
    from .api import Classifier, Regressor, Seq2Seq, Tagger, load

    _use_threads(threads)  # ONNX Runtime computes with as many threads
    model = load(checkpoint, runtime=runtime)
    if not isinstance(model, (Tagger, Classifier, Regressor, Seq2Seq)):
        raise click.UsageError(f"{checkpoint} holds a {model.task} model; predict needs a tagger, classifier, regression or seq2seq model (it generates: seqkit generate)")
    if beam is not None and not isinstance(model, Seq2Seq):
        raise click.UsageError("--beam is for seq2seq models")
    if output_format == "conll" and not isinstance(model, Tagger):
        raise click.UsageError("--format conll is for taggers; use text or jsonl")
    name = "<stdin>" if input_path == "-" else input_path
    is_jsonl = input_path.endswith((".jsonl", ".jsonl.gz"))
    field = model.recipe.data.input_field if not isinstance(model, Tagger) else "text"
    if model.recipe.data.inputs == "vectors" and not is_jsonl:
        raise click.UsageError(f"{checkpoint} reads vectors: give a .jsonl file with {field!r} holding each input's steps")
    chunk: list = []

    def flush() -> None:
        if not chunk:
            return
        if isinstance(model, Tagger):
            plain = model.labels.data_scheme == "none"
            docs = model.tag(chunk, batch_size=batch_size, scores=output_format == "jsonl")  # text and conll print no scores
            lines = [_format_doc(doc, output_format, plain) for doc in docs]
        elif isinstance(model, Seq2Seq):
            outputs = model.predict(chunk, beam=beam, batch_size=batch_size)
            lines = [json.dumps({"text": item, "output": output}, ensure_ascii=False) if output_format == "jsonl" else f"{item}\t{' '.join(output)}"
                     for item, output in zip(chunk, outputs)]  # fmt: skip
        else:
            results = model.predict(chunk, batch_size=batch_size)
            lines = [_format_prediction(item, result, output_format) for item, result in zip(chunk, results)]
        for line in lines:
            click.echo(line)
        chunk.clear()

    for number, line in _input_lines(input_path, encoding):
        if is_jsonl:
            if not line.strip():
                continue
            chunk.append(_jsonl_input(name, number, line, field, isinstance(model, Tagger), model.recipe.data.inputs == "vectors"))
        else:
            chunk.append(line)
        if len(chunk) >= 16 * batch_size:  # stream: predict a chunk, print it, read on
            flush()
    flush()


def _input_lines(input_path: str, encoding: str):
    """``(line number, line)`` of the file ``input_path``, or of stdin for ``-``: text in
    ``encoding``, gzip for a ``.gz`` name, line endings and a byte order mark removed."""
    from .data import decoded_lines, text_lines
    from .errors import DataError, NotTextError

    path = Path(input_path)
    if input_path != "-" and not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a file")
    try:
        yield from decoded_lines(click.open_file("-", "rb"), "<stdin>", encoding) if input_path == "-" else text_lines(path, encoding)
    except NotTextError as error:  # --encoding sets the encoding read here
        raise error.naming("--encoding") from None


def _jsonl_input(name: str, number: int, line: str, field: str, tagger: bool, vectors: bool) -> Any:
    """The input in one JSON Lines record: ``field`` (a string, or steps of numbers), or a
    tagger's pre-tokenized ``tokens``."""
    from .data import check_encodable
    from .errors import DataError

    try:
        record = json.loads(line)
    except ValueError:
        raise DataError(name, "not valid JSON", line=number) from None
    key = "tokens" if tagger and isinstance(record, dict) and "tokens" in record else field
    if not isinstance(record, dict) or key not in record:
        raise DataError(name, f"expected a JSON object with {field!r}" + (' or "tokens"' if tagger else ""), line=number)
    item = record[key]
    if key == "tokens":
        if not (isinstance(item, list) and all(isinstance(word, str) for word in item)):
            raise DataError(name, '"tokens" must be a list of strings', line=number)
    elif vectors:
        if not (isinstance(item, list) and item and all(isinstance(step, list) for step in item)):
            raise DataError(name, f"{field!r} must be a list of steps, each a list of numbers", line=number)
    elif not isinstance(item, str):
        raise DataError(name, f"{field!r} must be a string", line=number)
    for text in item if key == "tokens" else [] if vectors else [item]:
        check_encodable(name, number, key, text)  # JSON escapes can hold half of an emoji
    return item


def _format_prediction(item: Any, result: Any, output_format: str) -> str:
    """One classifier or regression output as a line of text or JSON."""
    import numpy as np

    from .api import Prediction

    if isinstance(result, np.ndarray):
        result = result.tolist()
    if output_format == "jsonl":
        record = {"text": item} if isinstance(item, str) else {}
        record.update(result.to_json() if isinstance(result, Prediction) else {"prediction": result})
        return json.dumps(record, ensure_ascii=False)
    text = item if isinstance(item, str) else ""
    if isinstance(result, Prediction):
        return f"{result.label}\t{result.probabilities[result.label]:.4f}\t{text}"
    if isinstance(result, dict):
        return "\t".join([*(f"{name}={value:.6g}" for name, value in result.items()), text])
    if isinstance(result, list):
        return json.dumps(result)
    return f"{result:.6g}\t{text}"


def _format_doc(doc, output_format: str, plain: bool = False) -> str:
    if output_format == "jsonl":
        return json.dumps(doc.to_json(), ensure_ascii=False)
    if output_format == "conll":
        return "".join(f"{token}\t{tag}\n" for token, tag in zip(doc.tokens, doc.tags))
    if plain:  # plain tags form no spans to mark: each word with its tag, word/TAG
        return " ".join(f"{token}/{tag}" for token, tag in zip(doc.tokens, doc.tags))
    marked, cursor = [], 0
    for span in doc.spans:
        marked += [doc.text[cursor : span.start], f"[{span.text}]({span.label})"]
        cursor = span.end
    return "".join(marked) + doc.text[cursor:]


def _finite(ctx: click.Context, param: click.Parameter, value: Optional[float]) -> Optional[float]:
    if value is not None and value != value:  # NaN passes every range test
        raise click.BadParameter("nan is not a number", ctx=ctx, param=param)
    return value


@main.command()
@click.argument("checkpoint")
@click.option("--prompt", default="", help="Text to continue (language models); the output starts with it as typed.")
@click.option("--condition", help="What to generate from (generators: e.g. female); see seqkit info.")
@click.option("--num", default=1, show_default=True, type=click.IntRange(1, 1_000), help="How many texts.")
@click.option("--max-tokens", type=click.IntRange(1, 100_000), help="Tokens to generate at most [default: the recipe's].")
@click.option("--temperature", type=click.FloatRange(0.0, 100.0), callback=_finite,
              help="Sampling temperature; 0 is greedy [default: the recipe's].")
@click.option("--top-k", type=click.IntRange(1, 1_000_000), help="Sample among the K most likely tokens.")
@click.option("--top-p", type=click.FloatRange(0.0, 1.0, min_open=True), callback=_finite,
              help="Sample within the nucleus of probability P.")
@click.option("--beam", type=click.IntRange(1, 100), help="Beam search of this width instead of sampling: the single most likely "
              "text, to the paragraph's end or --max-tokens. Takes no --temperature, --top-k or --top-p.")
@click.option("--no-repeat-ngram-size", type=click.IntRange(0, 100), metavar="N",
              help="With --beam (language models): never repeat an N-gram, the prompt's included; 0 allows repeats [default: 3].")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), help="Seed: the same seed gives the same text.")
def generate(checkpoint: str, prompt: str, condition: Optional[str], num: int, max_tokens: Optional[int], temperature: Optional[float],
             top_k: Optional[int], top_p: Optional[float], beam: Optional[int], no_repeat_ngram_size: Optional[int], seed: Optional[int]) -> None:  # fmt: skip
    """Generate text from a language model or a generator CHECKPOINT.

    A language model's text prints as it is generated (with --num, the first text does and
    the others follow when they are done); Ctrl-C keeps what was printed and exits 130.
    """
    from .api import Generator, LanguageModel, load

    if beam is not None:  # checked before the checkpoint is read
        sampling = [option for option, value in (("--temperature", temperature), ("--top-k", top_k), ("--top-p", top_p)) if value is not None]
        if sampling:
            raise click.UsageError(f"--beam finds the most likely text and samples nothing: leave out {', '.join(sampling)} (or --beam)")
        if num > 1:
            raise click.UsageError("--beam gives the single best text; leave --num out")
    elif no_repeat_ngram_size is not None:
        raise click.UsageError("--no-repeat-ngram-size is a setting of beam search: give --beam too, or leave it out")
    model = load(checkpoint)
    if isinstance(model, Generator):
        if prompt:
            raise click.UsageError("a generator writes from a --condition, not a --prompt")
        if no_repeat_ngram_size is not None:
            raise click.UsageError("--no-repeat-ngram-size is for language models")
        try:
            texts = model.generate(condition, num=num, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, max_length=max_tokens, beam=beam)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        click.echo("\n".join(texts))
        return
    if not isinstance(model, LanguageModel):
        raise click.UsageError(f"{checkpoint} holds a {model.task} model; generate needs a language model or a generator")
    if condition is not None:
        raise click.UsageError("--condition is for generators; a language model continues a --prompt")
    try:
        pieces = model.stream(prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, num=num, beam=beam,
                              no_repeat_ngram_size=no_repeat_ngram_size)  # fmt: skip
    except ValueError as error:  # a prompt that is not text (bytes that were not UTF-8, decoded by Python with surrogates)
        raise click.UsageError(str(error)) from None
    others: list[list[str]] = [[] for _ in range(num)]
    printed = False
    try:
        for index, piece in pieces:
            if index == 0:
                click.echo(piece, nl=False)  # flushed: the text shows as it comes
                printed = True
            else:
                others[index].append(piece)
        for index in range(1, num):
            click.echo("\n\n" + "".join(others[index]), nl=False)
        click.echo()
    except KeyboardInterrupt:
        if printed:
            click.echo()  # what was printed stays, on its own line
        raise


@main.command()
@click.argument("checkpoint")
def info(checkpoint: str) -> None:
    """Describe CHECKPOINT: task, sizes, tokenizer, metrics, version."""
    from .api import load

    click.echo("\n".join(_info_lines(checkpoint, load(checkpoint, device="cpu"))))


def _info_lines(checkpoint: str, model: Any) -> list[str]:
    """What ``seqkit info`` prints about a loaded model, a line each (``seqkit serve``'s
    ``GET /info`` returns the same lines as JSON)."""
    from .model import count_parameters
    from .tokenize import tokenizer_kind

    recipe, meta = model.recipe, model.info
    m = recipe.model
    lines = [
        f"checkpoint   {checkpoint}",
        f"task         {recipe.task}",
        f"model        {f'embedding {m.embedding_dim}' if model.tokenizer is not None else f'inputs {m.input_size}'}, {m.encoder}{' ' + m.nonlinearity if m.encoder == 'rnn' else ''} "
        f"{m.num_layers} layer(s) x {m.hidden_size}{' bidirectional' if m.bidirectional else ''}"
        f"{', tied weights' if m.tie_weights else ''}{', CRF' if m.crf else ''}"
        f"{', char ' + m.char_features if m.char_features != 'none' else ''}, dropout {m.dropout}",
        f"parameters   {count_parameters(model.model):,}",
        f"tokenizer    {tokenizer_kind(model.tokenizer)}, vocabulary {model.tokenizer.get_vocab_size():,}"
        if model.tokenizer is not None else f"inputs       vectors of {m.input_size} numbers per step (no tokenizer)",
    ]
    if recipe.task in ("classification", "regression"):
        lines[2] += f", {m.pooling} pooling" if m.pooling != "none" else ", an output per step"
    if m.output == "adaptive":
        lines[2] += f", adaptive softmax (cut at {', '.join(f'{cutoff:,}' for cutoff in model.model.head.bounds[:-1])})"
    if recipe.task == "tagging":
        plain = model.labels.scheme == "none"
        types = model.labels.labels if plain else sorted({tag.partition("-")[2] for tag in model.labels.labels} - {""})
        lines.append(f"labels       {len(model.labels.labels)} tags ({model.labels.scheme}): {', '.join(types)}")
    elif recipe.task == "classification":
        lines.append(f"labels       {len(model.labels.labels)} classes: {', '.join(model.labels.labels)}")
    elif recipe.task == "seq2seq":
        lines.append(f"target       {tokenizer_kind(model.labels)} tokenizer, vocabulary {model.labels.get_vocab_size():,}; {m.attention} attention")
    elif recipe.task == "generation":
        lines.append(f"conditions   {', '.join(model.labels.labels) or 'none'} (as {m.condition if model.labels.labels else '-'})")
    elif recipe.task == "regression":
        scale = model.labels
        if recipe.data.normalize_targets:
            lines.append("targets      " + ", ".join(f"{name} (standardized: mean {_number(mean)}, std {_number(std)})" for name, mean, std in zip(scale.names, scale.mean, scale.std)))
        else:  # the scale is 0 and 1: it says nothing about the data
            lines.append(f"targets      {', '.join(scale.names)} (as they are in the data: data.normalize_targets is false)")
    for split, metrics in (meta.get("metrics") or {}).items():
        lines.append(f"{split:<12} " + ", ".join(f"{name} {_number(value)}" for name, value in metrics.items() if not isinstance(value, dict)))
    if m.init_from is not None:
        lines.append(f"started from {m.init_from}")
    if m.embeddings.pretrained is not None:
        lines.append(f"word vectors {m.embeddings.pretrained}{' (frozen)' if m.embeddings.freeze else ''}")
    lines.append(f"step         {meta.get('step', '?')} (epoch {meta.get('epoch', '?')})")
    lines.append(f"written by   seqkit {meta.get('seqkit_version', '?')}, format {meta.get('format_version', '?')}, {meta.get('created', '?')}")
    return lines


@main.command()
@click.argument("checkpoint")  # a string: a URL is no path
@click.argument("archive", metavar="OUTPUT", type=click.Path(path_type=Path))
@click.option("--format", "output_format", type=click.Choice(["archive", "onnx", "hub"]), default="archive", show_default=True,
              help="archive: OUTPUT is a .tar.gz, .tgz or .zip of the checkpoint; onnx: OUTPUT is a directory holding model.onnx, "
                   "config.yaml, tokenizer.json and labels.json, for ONNX Runtime (taggers, classifiers, regression and language models); "
                   "hub: OUTPUT is a directory of the checkpoint's files and a model card README.md, to upload to the Hugging Face Hub.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (else an existing OUTPUT is an error).")
@click.option("--repo-id", metavar="USER/NAME", help="hub: the repository the folder goes to, named in its model card (default: USER/<OUTPUT's name>).")
@click.option("--quantize", type=click.Choice(["int8"]), help="onnx: store the LSTM layers' weights in int8 (faster on the CPU; scores move slightly: evaluate it).")
def export(checkpoint: str, archive: Path, output_format: str, overwrite: bool, repo_id: Optional[str], quantize: Optional[str]) -> None:
    """Write CHECKPOINT (a checkpoint or run directory, an archive or a URL) as OUTPUT to
    share or deploy it: everything needed to use the model, not the trainer state.

    An archive (.tar.gz, .tgz or .zip) prints its size and SHA-256, to publish its URL as
    URL#sha256=HEX. With --format onnx, OUTPUT is a directory that seqkit predict OUTPUT
    --runtime onnx (or from_pretrained(OUTPUT, runtime="onnx")) runs with ONNX Runtime;
    the export is checked against PyTorch first (pip install seqkit[onnx]). With --format
    hub, OUTPUT is a folder for hf upload USER/NAME OUTPUT, which then loads
    as hf://USER/NAME. Nothing is written unless CHECKPOINT loads.
    """
    report = lambda message: click.echo(message, err=True)  # noqa: E731
    if output_format == "hub":
        from .hf_hub import export_hub

        directory = export_hub(checkpoint, archive, overwrite=overwrite, repo_id=repo_id, report=report)
        click.echo(f"wrote {directory}/ (the checkpoint and README.md); upload it with: hf upload {repo_id or 'USER/' + directory.name} {directory}")
        return
    if repo_id is not None:
        raise click.UsageError("--repo-id names a Hub repository: it goes with --format hub")
    if quantize is not None and output_format != "onnx":
        raise click.UsageError("--quantize int8 quantizes an ONNX graph: it goes with --format onnx")
    if output_format == "onnx":
        from .onnx_export import export_onnx

        directory, difference = export_onnx(checkpoint, archive, overwrite=overwrite, quantize=quantize, report=report)
        if quantize:
            click.echo(f"wrote {directory}/ (model.onnx, its LSTM weights in int8, and the files beside it); on a batch of mixed lengths its scores "
                       f"differ from PyTorch's by up to {difference:.2g}: evaluate it on your data before deploying it")  # fmt: skip
        else:
            click.echo(f"wrote {directory}/ (model.onnx and the files beside it); ONNX Runtime matches PyTorch within {difference:.1g} on a batch of mixed lengths")
        return
    from .hub import export as export_archive

    exported = export_archive(checkpoint, archive, overwrite=overwrite, report=report)
    click.echo(f"wrote {exported.path} ({_number(exported.size)} bytes)")
    click.echo(f"sha256 {exported.sha256}")


@main.command(name="export-embeddings")
@click.argument("checkpoint")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (else an existing OUTPUT is an error).")
def export_embeddings(checkpoint: str, output: Path, overwrite: bool) -> None:
    """Write CHECKPOINT's input word vectors to OUTPUT in the word2vec / GloVe text format
    (a COUNT DIMENSION header, then a word and its numbers a line), which a recipe's
    model.embeddings.pretrained reads back. OUTPUT's directory must exist."""
    from .api import load
    from .checkpoint import check_new_file
    from .errors import CheckpointError
    from .vectors import write_vectors

    check_new_file(output, overwrite)  # before loading: a refusal costs nothing
    model = load(checkpoint, device="cpu")
    if model.tokenizer is None:
        raise CheckpointError(checkpoint, "reads vectors, not words: it has no word embedding to export")
    count = write_vectors(model.model.embedding.embedding, model.tokenizer, output, overwrite=overwrite)
    click.echo(f"wrote {count:,} vectors of {model.recipe.model.embedding_dim} numbers to {output}")


@main.command()
@click.argument("checkpoint")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="The TCP port (0: any free one, printed).")
@click.option("--max-batch", default=32, show_default=True, type=click.IntRange(1, 10_000), help="Texts per model call at most.")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(0, 1000), callback=_finite,
              help="How long a batch waits for requests still being read to join it (a request alone never waits).")
@click.option("--max-body", default=1_000_000, show_default=True, type=click.IntRange(1, 2**31), help="Request bodies over this many bytes get 413.")
@click.option("--max-text", default=10_000, show_default=True, type=click.IntRange(1, 10_000_000), help="Characters per text (or prompt) at most.")
@click.option("--max-texts", default=64, show_default=True, type=click.IntRange(1, 100_000), help='Texts per request ("texts") at most.')
@_runtime_option
@_threads_option
def serve(checkpoint: str, host: str, port: int, max_batch: int, max_wait_ms: float, max_body: int, max_text: int, max_texts: int,
          runtime: str, threads: Optional[int]) -> None:  # fmt: skip
    """Serve CHECKPOINT over HTTP: POST /predict with {"text": ...} or {"texts": [...]}
    answers what predict --format jsonl prints per text (a language model or generator:
    the generated text); GET / is a page to try it, GET /health and GET /info describe
    the service. Concurrent requests are batched into one model call. Ctrl-C stops it.
    Needs the serve extra: pip install 'seqkit[serve]'."""
    try:
        import starlette  # noqa: F401 -- the serve extra, asked for only here
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise click.UsageError(f"seqkit serve needs {error.name or 'starlette and uvicorn'}: pip install 'seqkit[serve]'") from None
    from .api import load
    from .serve import Limits, run_server

    _use_threads(threads)
    run_server(load(checkpoint, runtime=runtime), checkpoint, host, port, Limits(max_batch, max_wait_ms / 1000, max_body, max_text, max_texts),
               report=lambda message: click.echo(message, err=True))  # fmt: skip


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
