"""Where checkpoints come from: a directory, a run directory (its ``best/``), an archive of
one, or the URL of an archive.

``resolve`` turns what a user passes to ``from_pretrained`` / ``seqkit.load`` / any command
into a local checkpoint directory, and ``open_checkpoint`` loads it, naming what the user
passed when it is bad; ``export`` writes the archive that ``resolve`` reads. Archives and
downloads go through a cache (``SEQKIT_CACHE``, default ``~/.cache/seqkit``)::

    downloads/KEY-NAME     a downloaded archive; KEY is a hash of its URL
    checkpoints/SHA256/    an unpacked archive, named by the archive's SHA-256

Every entry is written under a temporary name and renamed into place, so a failed
download or a refused archive leaves nothing behind. Unpacking accepts regular files and
directories only, within a size and member limit, so an archive cannot write outside its
entry or fill the disk. ``SEQKIT_OFFLINE=1`` never touches the network.

``hf://USER/NAME[@REVISION]`` is a Hugging Face Hub repository: ``hf_hub.fetch`` downloads it
into the Hub's own cache (``HF_HOME``), offline with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any, Callable, Iterator, NamedTuple, Optional
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

from . import __version__
from .checkpoint import CONFIG, TRAINER_STATE, WEIGHTS, Checkpoint, check_new_file, checkpoint_in, load_checkpoint, new_file
from .errors import CheckpointError, SeqkitError
from .hf_hub import is_hf

MAX_ARCHIVE_BYTES = 2 * 1024**3  # unpacked; SEQKIT_MAX_ARCHIVE_BYTES overrides it
MAX_ARCHIVE_MEMBERS = 1000  # a checkpoint has a handful of files
DOWNLOAD_TIMEOUT_S = 60
CHUNK_BYTES = 1024**2
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
_TAR_KINDS = {tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "character device",
              tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO"}  # fmt: skip
_ZIP_KINDS = {stat.S_IFLNK: "symbolic link", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
              stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket"}  # fmt: skip


@dataclass(frozen=True)
class Exported:
    """An archive ``export`` wrote: where it is, its size in bytes and its SHA-256 (hex)."""

    path: Path
    size: int
    sha256: str


class _Member(NamedTuple):
    """One archive member, tar or zip alike."""

    name: str
    kind: str  # "file", "directory", or what else it is ("symbolic link", ...): refused
    size: int  # unpacked bytes
    open: Callable[[], IO[bytes]]


def resolve(source: str | Path, *, sha256: Optional[str] = None, report: Optional[Callable[[str], None]] = None) -> Path:
    """The local checkpoint directory that ``source`` names, downloading and unpacking it first
    when it is a URL or an archive.

    Args:
        source: a checkpoint directory; a run directory (meaning its ``best/``, or ``last/``
            when it has no ``best/`` yet); a ``.tar.gz``, ``.tgz`` or ``.zip`` archive of a
            checkpoint (as ``export`` writes: the files at its top level or in its one
            top-level directory); or an ``http://`` / ``https://`` URL of such an archive,
            optionally ending in ``#sha256=HEX``; or ``hf://USER/NAME[@REVISION]``, a Hugging
            Face Hub model repository holding a checkpoint (``hf_hub.fetch``).
        sha256: the SHA-256 (hex) the archive must have; the same as ``#sha256=HEX``.
        report: told, in a line, which checkpoint of a run directory is used.

    Returns:
        ``source`` itself for a checkpoint directory; its ``best/`` (or ``last/``) for a run
        directory; else the archive's unpacked copy in the cache, which is shared by every
        load and must not be modified.

    Raises:
        CheckpointError: naming the path or URL: not found, a run directory with no
            checkpoint yet, a failed download, a SHA-256 mismatch, not an archive, an archive
            with no weights, an unsafe archive, or an uncached URL while offline.
    """
    if is_hf(source):
        from .hf_hub import fetch  # huggingface_hub is imported only for a Hub checkpoint

        if sha256 is not None:
            raise CheckpointError(source, "sha256 verifies an archive or a URL; pin a Hub checkpoint by its commit instead: hf://USER/NAME@COMMIT")
        return fetch(source)
    if is_url(source):
        url, expected = _split_sha256(source, sha256)
        return _from_url(url, expected)
    path = Path(source)
    expected = _checked_sha256(path, sha256) if sha256 is not None else None
    if path.is_file():
        return _from_archive(path, expected, str(path))
    if path.name.endswith(ARCHIVE_SUFFIXES) and not path.exists():
        raise CheckpointError(path, "archive not found")
    if expected is not None:
        raise CheckpointError(path, "sha256 verifies an archive or a URL, and this is not an archive file")
    return checkpoint_in(path, report)


def open_checkpoint(source: str | Path, device: Any = "cpu", *, sha256: Optional[str] = None,
                    report: Optional[Callable[[str], None]] = None) -> Checkpoint:  # fmt: skip
    """Load the checkpoint that ``source`` names (anything ``resolve`` takes) on ``device``.

    Raises:
        CheckpointError: as ``resolve``; or a file of the checkpoint is missing or does not
            fit the others, naming it -- for an archive or a URL, as the archive and the
            file in it, not the cache's copy.
    """
    return _loaded(resolve(source, sha256=sha256, report=report), source, device)


def _loaded(directory: Path, source: str | Path, device: Any) -> Checkpoint:
    """``load_checkpoint(directory)``, whose errors name ``source`` when ``directory`` is the
    cache's copy of an archive or of a Hub repository."""
    try:
        return load_checkpoint(directory, device)
    except CheckpointError as error:
        hf = isinstance(source, str) and source[:5].lower() == "hf://"
        if not (hf or directory.is_relative_to(cache_dir() / "checkpoints")):
            raise
        label = _split_sha256(source, None)[0] if is_url(source) else str(source)
        message = str(error)[len(error.path) + 2 :]  # without the cache path in front
        member = Path(error.path).relative_to(directory) if Path(error.path).is_relative_to(directory) else None
        where = "the repository" if hf else "the archive"
        raise CheckpointError(label, f"{member} in {where}: {message}" if member and member != Path(".") else message) from None


def export(checkpoint: str | Path, archive_path: str | Path, *, overwrite: bool = False,
           report: Optional[Callable[[str], None]] = None) -> Exported:  # fmt: skip
    """Write a checkpoint as an archive that ``resolve`` reads, to share a model.

    ``checkpoint`` is anything ``resolve`` takes: a checkpoint directory, a run directory
    (its ``best/``), an archive or a URL. It is loaded first, so that only what loads is
    packaged. The archive type follows the suffix (``.tar.gz``, ``.tgz`` or ``.zip``). The
    files sit in one top-level directory named after the archive, so unpacking it by hand
    makes a single directory. ``trainer_state.pt`` is left out: only resuming training needs
    it. The archive is written under a temporary name and renamed, so an interrupted export
    leaves none; a missing directory for it is created.

    Args:
        overwrite: replace ``archive_path`` if it exists (else that is an error).
        report: told, in a line, which checkpoint of a run directory is exported.

    Returns:
        The archive's path, size and SHA-256, to publish as ``URL#sha256=HEX``.

    Raises:
        CheckpointError: ``checkpoint`` is not a loadable checkpoint (nothing is written).
        SeqkitError: ``archive_path`` has none of the archive suffixes, exists (without
            ``overwrite``), is a directory, or cannot be written.
    """
    archive = Path(archive_path)
    suffix = next((suffix for suffix in ARCHIVE_SUFFIXES if archive.name.endswith(suffix)), None)
    if suffix is None:
        raise SeqkitError(f"{archive}: name the archive {', '.join(ARCHIVE_SUFFIXES)} (its suffix picks the format)")
    check_new_file(archive, overwrite, make_directory=True)
    directory = resolve(checkpoint, report=report)
    _loaded(directory, checkpoint, "cpu")  # package only what loads: weights that fit a config.yaml this seqkit reads
    top = archive.name[: -len(suffix)] or "checkpoint"
    files = sorted(path for path in directory.iterdir() if path.is_file() and path.name != TRAINER_STATE)
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SeqkitError(f"{archive}: cannot create its directory ({error.strerror or error})") from None
    with new_file(archive) as temporary:
        if suffix == ".zip":
            with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as bundle:
                for path in files:
                    bundle.write(path, f"{top}/{path.name}")
        else:
            with tarfile.open(temporary, "w:gz") as bundle:
                for path in files:
                    # a plain member (no owner names; a symlinked file goes in as its content)
                    info = tarfile.TarInfo(f"{top}/{path.name}")
                    info.size, info.mtime, info.mode = path.stat().st_size, int(path.stat().st_mtime), 0o644
                    with path.open("rb") as handle:
                        bundle.addfile(info, handle)
    return Exported(archive, archive.stat().st_size, _file_sha256(archive))


def cache_dir() -> Path:
    """Where downloads and unpacked archives are kept: ``SEQKIT_CACHE``, else ``~/.cache/seqkit``."""
    return Path(os.environ.get("SEQKIT_CACHE") or Path.home() / ".cache" / "seqkit").expanduser()


def _from_url(url: str, expected: Optional[str]) -> Path:
    """The checkpoint directory for an archive URL: from the cache when it holds the download
    (and its SHA-256 is the expected one), else downloaded, verified and unpacked first."""
    downloads = cache_dir() / "downloads"
    cached = downloads / _url_key(url)
    if cached.is_file():
        digest = _file_sha256(cached)
        if expected in (None, digest):
            return _unpacked(cached, digest, url)
        # else the file behind the URL changed since it was cached: fetch it again
    if _offline():
        why = "its cached copy has a different SHA-256" if cached.is_file() else "it is not in the cache"
        raise CheckpointError(url, f"{why} ({downloads}) and SEQKIT_OFFLINE is set, so seqkit does not download it")
    downloads.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=".tmp-", dir=downloads)
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as sink:
            digest = _download(url, sink)
        _verify_sha256(url, digest, expected)
        directory = _unpacked(temporary, digest, url)  # a refused archive is not cached
        os.replace(temporary, cached)
    finally:
        temporary.unlink(missing_ok=True)
    return directory


def _download(url: str, sink: IO[bytes]) -> str:
    """Stream ``url`` into ``sink`` with a progress bar on a terminal; returns its SHA-256."""
    limit = _max_archive_bytes()
    digest, received = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers={"User-Agent": f"seqkit/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            expected_size = response.length  # None without a Content-Length header
            name = PurePosixPath(urlsplit(url).path).name or url
            with tqdm(total=expected_size, desc=name, unit="B", unit_scale=True, unit_divisor=1024, disable=not sys.stderr.isatty()) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    received += len(chunk)
                    if received > limit:
                        raise CheckpointError(url, f"refused: larger than {limit:,} bytes (SEQKIT_MAX_ARCHIVE_BYTES)")
                    sink.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise CheckpointError(url, f"download failed: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise CheckpointError(url, f"download failed ({getattr(error, 'reason', None) or error})") from None
    if expected_size is not None and received != expected_size:
        raise CheckpointError(url, f"download incomplete: {received:,} of {expected_size:,} bytes")
    sink.flush()
    os.fsync(sink.fileno())
    return digest.hexdigest()


def _from_archive(archive: Path, expected: Optional[str], label: str) -> Path:
    """The checkpoint directory for a local archive, verified against ``expected`` when given."""
    digest = _file_sha256(archive)
    _verify_sha256(label, digest, expected)
    return _unpacked(archive, digest, label)


def _unpacked(archive: Path, digest: str, label: str) -> Path:
    """The cache entry holding ``archive`` (whose SHA-256 is ``digest``) unpacked, made first if
    needed: unpacked into a temporary directory beside it, then renamed into place.
    Errors name ``label``, the path or URL the user gave."""
    entry = cache_dir() / "checkpoints" / digest
    if entry.is_dir():
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    try:
        _unpack(archive, temporary, label)
        try:
            os.rename(_checkpoint_root(temporary, label), entry)
        except OSError:
            if not entry.is_dir():  # else another process unpacked the same archive first
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return entry


def _unpack(archive: Path, destination: Path, label: str) -> None:
    """Unpack ``archive`` into the empty directory ``destination``, refusing any member that
    is not a plain file or directory, any path that is absolute or holds ``..``, and archives
    with too many members or too many unpacked bytes."""
    limit, total = _max_archive_bytes(), 0
    try:
        with _members(archive, label) as members:
            for count, member in enumerate(members, start=1):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise CheckpointError(label, f"refused: more than {MAX_ARCHIVE_MEMBERS:,} members")
                parts = _member_parts(member.name, label)
                if member.kind not in ("file", "directory"):
                    raise CheckpointError(label, f"refused: member {member.name!r} is a {member.kind}; a checkpoint archive holds only files and directories")
                # declared sizes bound what is written: tarfile reads exactly `size` bytes, zipfile stops at `file_size`
                total += member.size
                if total > limit:
                    raise CheckpointError(label, f"refused: unpacks to more than {limit:,} bytes (SEQKIT_MAX_ARCHIVE_BYTES)")
                target = destination.joinpath(*parts)
                if member.kind == "directory":
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not parts:
                    raise CheckpointError(label, f"refused: member {member.name!r} is a file without a name")
                target.parent.mkdir(parents=True, exist_ok=True)
                with member.open() as source, target.open("xb") as sink:  # "x": a repeated name is an error, not an overwrite
                    shutil.copyfileobj(source, sink, CHUNK_BYTES)
                    os.fsync(sink.fileno())
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as error:
        raise CheckpointError(label, f"damaged or unreadable archive ({error})") from None


@contextlib.contextmanager
def _members(archive: Path, label: str) -> Iterator[Iterator[_Member]]:
    """The members of a zip or (compressed) tar archive, read lazily: a refusal stops reading."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            yield (_Member(info.filename, _zip_kind(info), info.file_size, partial(bundle.open, info)) for info in bundle.infolist())
        return
    try:
        bundle = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError):
        raise CheckpointError(label, "not a .tar.gz or .zip archive") from None
    with bundle:
        yield (_Member(info.name, _tar_kind(info), info.size, partial(bundle.extractfile, info)) for info in bundle)


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    return "directory" if info.isdir() else _TAR_KINDS.get(info.type, "special member")


def _zip_kind(info: zipfile.ZipInfo) -> str:
    if info.flag_bits & 0x1:
        return "encrypted file"
    file_type = stat.S_IFMT(info.external_attr >> 16)  # Unix archivers record the mode here
    if info.is_dir() or file_type == stat.S_IFDIR:
        return "directory"
    return "file" if file_type in (0, stat.S_IFREG) else _ZIP_KINDS.get(file_type, "special member")


def _member_parts(name: str, label: str) -> tuple[str, ...]:
    """The path components of a member name; refuses absolute names and ``..`` (read with
    both separators, as an archive made on Windows means them)."""
    if PureWindowsPath(name).anchor or name.startswith("/"):
        raise CheckpointError(label, f"refused: member {name!r} has an absolute path")
    if ".." in PureWindowsPath(name).parts:
        raise CheckpointError(label, f"refused: member {name!r} has a '..' in its path")
    return PurePosixPath(name).parts


def _checkpoint_root(unpacked: Path, label: str) -> Path:
    """The checkpoint in an unpacked archive: at its top level, or in its one top-level directory."""
    entries = list(unpacked.iterdir())
    if (unpacked / CONFIG).is_file():
        root = unpacked
    elif len(entries) == 1 and (entries[0] / CONFIG).is_file():
        root = entries[0]
    else:
        raise CheckpointError(label, f"holds no seqkit checkpoint (no {CONFIG} at its top level or in its one top-level directory)")
    if not (root / WEIGHTS).is_file():  # e.g. the archive of a run directory, not of its best/
        member = WEIGHTS if root == unpacked else f"{root.name}/{WEIGHTS}"
        raise CheckpointError(label, f"holds no weights (no {member}), so no model: it is not the archive of a checkpoint directory; "
                                     "export one, such as runs/NAME/best")  # fmt: skip
    return root


def _split_sha256(source: str, sha256: Optional[str]) -> tuple[str, Optional[str]]:
    """A URL without its ``#sha256=HEX`` fragment, and the SHA-256 it or ``sha256`` expects."""
    parts = urlsplit(source)
    url = urlunsplit(parts._replace(fragment=""))
    expected = _checked_sha256(url, sha256) if sha256 is not None else None
    if parts.fragment:
        key, _, value = parts.fragment.partition("=")
        if key != "sha256":
            raise CheckpointError(url, f"unknown fragment #{parts.fragment}: the one seqkit reads is #sha256=HEX")
        from_fragment = _checked_sha256(url, value)
        if expected not in (None, from_fragment):
            raise CheckpointError(url, f"two different SHA-256s given: #sha256={from_fragment} and sha256={expected}")
        expected = from_fragment
    return url, expected


def _checked_sha256(label: object, value: str) -> str:
    normalized = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", normalized):
        raise CheckpointError(label, f"sha256 {value!r} is not 64 hexadecimal digits")
    return normalized


def _verify_sha256(label: str, digest: str, expected: Optional[str]) -> None:
    if expected is not None and digest != expected:
        raise CheckpointError(label, f"SHA-256 mismatch: expected {expected}, got {digest}")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _url_key(url: str) -> str:
    """A cache file name for a URL: a hash of it (unique), then its file name (readable)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(urlsplit(url).path).name)[-64:] or "archive"
    return f"{hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]}-{name}"


def is_url(source: object) -> bool:
    """Whether ``source`` is an ``http://`` or ``https://`` URL (a string; a path never is one)."""
    return isinstance(source, str) and urlsplit(source).scheme.lower() in ("http", "https")


def _offline() -> bool:
    return os.environ.get("SEQKIT_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _max_archive_bytes() -> int:
    value = os.environ.get("SEQKIT_MAX_ARCHIVE_BYTES")
    if not value:
        return MAX_ARCHIVE_BYTES
    try:
        return int(value)
    except ValueError:
        raise SeqkitError(f"SEQKIT_MAX_ARCHIVE_BYTES={value!r}: expected a whole number of bytes") from None
