"""Checkpoints on the Hugging Face Hub: ``hf://USER/NAME[@REVISION]`` in, a folder to upload out.

``fetch`` downloads the checkpoint files of a Hub model repository with ``huggingface_hub``
(``snapshot_download``) into the Hub's standard cache (``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), so other Hub tools share the copy and
a pinned commit is fetched once. ``HF_HUB_OFFLINE=1`` reads the cache only; ``HF_ENDPOINT``
names another Hub; ``HF_TOKEN`` (or ``hf auth login``) reads a private repository.
The environment is read at each call, not when ``huggingface_hub`` was imported.

``export_hub`` writes what ``hf upload USER/NAME DIR`` publishes: the
checkpoint's files and a model card (``README.md``) whose YAML front matter the Hub reads
(library, pipeline, tags, the validation metrics the checkpoint measured).

``huggingface_hub`` is imported here only, and only when a Hub checkpoint is used, so the
CLI answers ``--help`` without it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from . import __version__
from .checkpoint import CONFIG, LABELS, TARGET_TOKENIZER, TOKENIZER, WEIGHTS, _swap_in
from .errors import CheckpointError, SeqkitError

SCHEME = "hf://"
FILES = (CONFIG, WEIGHTS, TOKENIZER, LABELS, TARGET_TOKENIZER)  # what a load reads; never trainer_state.pt
CARD = "README.md"
EXPORT_FILES = frozenset({*FILES, CARD})
PIPELINE_TAGS = {"tagging": "token-classification", "classification": "text-classification", "regression": "text-classification",
                 "language_model": "text-generation", "generation": "text-generation", "seq2seq": "text2text-generation"}  # fmt: skip
COUNTS = frozenset({"entities", "examples", "sentences", "sequences", "tokens"})  # how much was measured: sizes, not metrics
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def is_hf(source: object) -> bool:
    """Whether ``source`` is an ``hf://`` reference (a string; a path never is one)."""
    return isinstance(source, str) and source[: len(SCHEME)].lower() == SCHEME


def parse(source: str) -> tuple[str, Optional[str]]:
    """``hf://USER/NAME@REVISION`` as the repository id and the revision (None: the default
    branch). A revision may hold ``/`` (``refs/pr/1``), so the first ``@`` ends the id."""
    reference = source[len(SCHEME) :]
    repo_id, at, revision = reference.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or (at and not revision):
        raise CheckpointError(source, "not a Hub reference: write hf://USER/NAME, optionally @REVISION (a branch, tag or commit)")
    return repo_id, revision or None


def hf_cache_dir() -> Path:
    """The Hub's standard cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(os.path.expandvars(str(explicit or Path(home) / "hub"))).expanduser()


def _endpoint() -> Optional[str]:
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _offline() -> bool:
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def fetch(source: str) -> Path:
    """The local directory holding the checkpoint that ``hf://USER/NAME[@REVISION]`` names:
    its snapshot in the Hub's cache, downloaded first when the cache lacks it (and not offline).
    The snapshot is shared by every load and must not be modified.

    Raises:
        CheckpointError: in one line naming ``source``: a malformed reference, the repository
            or the revision not found, no seqkit checkpoint in it, the Hub unreachable, or
            not cached while ``HF_HUB_OFFLINE`` is set.
        SeqkitError: ``huggingface_hub`` is not installed.
    """
    repo_id, revision = parse(source)
    try:
        import huggingface_hub
        from huggingface_hub.utils import disable_progress_bars
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:
        raise SeqkitError(f"{source}: loading from the Hugging Face Hub needs huggingface_hub: pip install huggingface_hub") from None
    endpoint, cache = _endpoint(), hf_cache_dir()
    offline = _offline() or huggingface_hub.constants.HF_HUB_OFFLINE  # set now, or when huggingface_hub was imported (it then refuses any request)
    where = endpoint or huggingface_hub.constants.ENDPOINT
    if not os.isatty(2):
        disable_progress_bars()  # as seqkit's own downloads: bars on a terminal only
    try:
        folder = huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=cache, endpoint=endpoint, local_files_only=offline,
                                                   allow_patterns=list(FILES), library_name="seqkit", library_version=__version__)  # fmt: skip
    except RevisionNotFoundError:
        raise CheckpointError(source, f"revision {revision!r} not found in the Hub repository {repo_id} ({where}): name a branch, tag or commit it has") from None
    except RepositoryNotFoundError:
        raise CheckpointError(source, f"repository {repo_id} not found on the Hub ({where}); a private one needs HF_TOKEN or hf auth login") from None
    except LocalEntryNotFoundError as error:
        if offline:
            raise CheckpointError(source, f"not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set, so seqkit does not download it") from None
        cause = error.__cause__
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            why = f"the Hub ({where}) answered HTTP {cause.response.status_code}"
        else:
            why = f"cannot reach the Hub ({where}: {type(cause).__name__ if cause else 'no network'})"
        raise CheckpointError(source, f"{why}, and it is not in the Hugging Face cache ({cache}); "
                                      "with no network, set HF_HUB_OFFLINE=1 to load what the cache holds") from None  # fmt: skip
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise CheckpointError(source, f"the Hub ({where}) answered HTTP {status}") from None
    except (OSError, ValueError) as error:  # a cache that cannot be written, an id the Hub refuses
        raise CheckpointError(source, f"cannot fetch it from the Hub ({type(error).__name__}: {' '.join(str(error).split())[:200]})") from None
    directory = Path(folder)
    missing = [name for name in (CONFIG, WEIGHTS) if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(source, f"not a seqkit checkpoint: the repository has no {' and no '.join(missing)} at its top level"
                                      f"{'' if revision is None else f' at revision {revision}'}")  # fmt: skip
    return directory


def export_hub(checkpoint: str | Path, directory: str | Path, *, overwrite: bool = False, repo_id: Optional[str] = None,
               report: Optional[Callable[[str], None]] = None) -> Path:  # fmt: skip
    """Write ``checkpoint`` (anything ``hub.resolve`` takes) as a folder ready to upload to a
    Hub model repository: its files (not ``trainer_state.pt``) and a model card. It is
    loaded first, so only what loads is written; the folder is written beside ``directory``
    and renamed into place, so an interrupted export leaves none.

    Args:
        overwrite: replace ``directory`` if it holds such a folder (nothing else is ever replaced).
        repo_id: the repository it goes to (``user/name``), named in the card's examples
            (None: ``USER/<directory name>``, for the reader to replace).
        report: told, in a line, which checkpoint of a run directory is exported.

    Raises:
        SeqkitError: ``directory`` exists (without ``overwrite``) or holds anything else;
            ``repo_id`` is not ``user/name``.
        CheckpointError: ``checkpoint`` does not load.
    """
    from .hub import _loaded, resolve
    from .onnx_export import check_export_target

    directory = Path(directory)
    if repo_id is not None and (not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or "/" not in repo_id):
        raise SeqkitError(f"--repo-id {repo_id!r}: write the Hub repository as USER/NAME (letters, digits, '-', '_', '.')")
    check_export_target(directory, overwrite, files=EXPORT_FILES, marker=CARD, kind="a Hub folder")
    source = resolve(checkpoint, report=report)
    loaded = _loaded(source, checkpoint, "cpu")
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir(parents=True)
        for name in FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, temporary / name)
        (temporary / CARD).write_text(model_card(loaded.recipe, loaded.info, directory.name or "model", repo_id), encoding="utf-8")
        _swap_in(temporary, directory)
    except OSError as error:
        raise SeqkitError(f"{directory}: cannot write the Hub folder ({error.strerror or error}); nothing was written there") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return directory


def card_metadata(recipe: Any, info: dict[str, Any], name: str) -> dict[str, Any]:
    """The model card's YAML front matter: what the Hub indexes and shows beside the model.
    Metrics are the numbers the checkpoint's ``config.yaml`` holds (measured on its
    validation and test data during training), nothing recomputed."""
    task, m = recipe.task, recipe.model
    pipeline = PIPELINE_TAGS.get(task) if recipe.data.inputs == "text" else None
    tags = ["seqkit", "pytorch", m.encoder, task.replace("_", "-")] + (["crf"] if m.crf else []) + (["regression"] if task == "regression" else [])
    metadata: dict[str, Any] = {"library_name": "seqkit", **({"pipeline_tag": pipeline} if pipeline else {}), "tags": list(dict.fromkeys(tags))}
    results = []
    for split, values in (info.get("metrics") or {}).items():
        numbers = {key: value for key, value in (values or {}).items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in COUNTS}  # fmt: skip
        if not numbers:
            continue
        data = getattr(recipe.data, split, None) if split in ("valid", "test") else None
        dataset = Path(str(data)).name if data else f"{split} split"
        results.append({"task": {"type": pipeline or task},
                        "dataset": {"name": dataset, "type": dataset, "split": "validation" if split == "valid" else split},
                        "metrics": [{"type": key, "value": float(value), "name": f"{split} {key}"} for key, value in numbers.items()]})  # fmt: skip
    if results:
        metadata["metrics"] = list(dict.fromkeys(metric["type"] for result in results for metric in result["metrics"]))
        metadata["model-index"] = [{"name": name, "results": results}]
    return metadata


def model_card(recipe: Any, info: dict[str, Any], name: str, repo_id: Optional[str] = None) -> str:
    """The ``README.md`` of a Hub folder: front matter, what the model is, how to load it, its
    metrics and its recipe."""
    metadata = card_metadata(recipe, info, name)
    m = recipe.model
    shape = f"{m.encoder.upper()}, {m.num_layers} layer(s) x {m.hidden_size}{' bidirectional' if m.bidirectional else ''}{', CRF' if m.crf else ''}"
    reference = f"hf://{repo_id or 'USER/' + name}"
    upload = f"`hf upload {repo_id} .`" if repo_id else f"`hf upload USER/{name} .` (USER/{name}: your repository)"
    lines = ["---", yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {name}", "", f"A seqkit {recipe.task.replace('_', ' ')} model ({shape}), "
             f"trained {info.get('step', '?')} steps ({info.get('epoch', '?')} epochs) with seqkit {info.get('seqkit_version', '?')}.", "",
             "## Use", "", "```python", "import seqkit", "", f'model = seqkit.load("{reference}")  # or "{reference}@REVISION" for a branch, tag or commit',
             "```", "", f"or `seqkit predict {reference} INPUT`, `seqkit info {reference}`. Upload this folder with",
             f"{upload}.", ""]  # fmt: skip
    rows = [(result["dataset"]["split"], metric["type"], metric["value"]) for result in metadata.get("model-index", [{}])[0].get("results", []) for metric in result["metrics"]]
    if rows:
        lines += ["## Metrics", "", "As measured during training and stored in the checkpoint's config.yaml.", "", "| split | metric | value |", "|---|---|---|"]
        lines += [f"| {split} | {metric} | {value:.4g} |" for split, metric, value in rows] + [""]
    recipe_yaml = yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True).rstrip()
    lines += ["## Recipe", "", "The resolved recipe it was trained with (`seqkit train RECIPE` reproduces it on the same data):", "",
              "```yaml", recipe_yaml, "```", ""]  # fmt: skip
    return "\n".join(lines)

