"""Loading a checkpoint from anywhere, safely: export -> archive -> load in a fresh process
(tar.gz and zip); a URL served from 127.0.0.1, downloaded once, verified by SHA-256 and
reused offline; unsafe archives and planted pickles refused; each failure one clear error
naming the file or URL, leaving nothing in the cache; a checkpoint of each released format
still loads and predicts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import socket
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import seqkit
from seqkit import hub
from seqkit.checkpoint import FORMAT_VERSION, load_trainer_state
from seqkit.cli import main
from seqkit.errors import CheckpointError

from helpers import run_python

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEXTS = ["WIN a FREE cruise, click here now!!", "Meeting moved to Tuesday, see agenda attached", "über 日本 🙂"]
CHECKPOINT_FILES = {"config.yaml", "model.safetensors", "tokenizer.json", "labels.json"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """An empty download cache for each test, online, with the default archive limit."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SEQKIT_CACHE", str(path))
    monkeypatch.delenv("SEQKIT_OFFLINE", raising=False)
    monkeypatch.delenv("SEQKIT_MAX_ARCHIVE_BYTES", raising=False)
    return path


@pytest.fixture(scope="module")
def archives(trained_classifier, tmp_path_factory) -> dict[str, Path]:
    """The trained classifier's last/ checkpoint (trainer state and all), exported as .tar.gz and .zip."""
    directory = tmp_path_factory.mktemp("archives")
    last = trained_classifier.run_dir / "last"
    return {suffix: hub.export(last, directory / f"spam{suffix}").path for suffix in (".tar.gz", ".zip")}


def _cache_entries(cache: Path) -> list[str]:
    """Everything in the cache except its two folders: files, entries, hidden temporaries."""
    return sorted(str(path.relative_to(cache)) for path in cache.rglob("*") if path.parent != cache)


def _predictions(model) -> list:
    return [[prediction.label, prediction.probabilities] for prediction in model.predict(TEXTS)]


def test_export_leaves_out_the_trainer_state_and_prints_the_sha256(trained_classifier, tmp_path):
    last = trained_classifier.run_dir / "last"
    assert (last / "trainer_state.pt").is_file()
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(last), str(tmp_path / "dist" / "spam.tar.gz")])
    assert result.exit_code == 0, result.output
    archive = tmp_path / "dist" / "spam.tar.gz"
    assert f"sha256 {hashlib.sha256(archive.read_bytes()).hexdigest()}" in result.output
    assert f"({archive.stat().st_size:,} bytes)" in result.output
    with tarfile.open(archive) as bundle:
        assert {member.name for member in bundle} == {f"spam/{name}" for name in CHECKPOINT_FILES}
    assert [path.name for path in (tmp_path / "dist").iterdir()] == ["spam.tar.gz"]  # no temporary left
    wrong = runner.invoke(main, ["export", str(last), str(tmp_path / "spam.rar")])
    assert wrong.exit_code == 2 and "spam.rar: name the archive .tar.gz, .tgz, .zip" in wrong.stderr
    missing = runner.invoke(main, ["export", str(tmp_path / "nothing"), str(tmp_path / "x.zip")])
    assert missing.exit_code == 2 and "nothing: checkpoint directory not found" in missing.stderr


def test_archives_load_in_a_fresh_process_with_identical_predictions(trained_classifier, archives, cache, tmp_path):
    here = _predictions(seqkit.Classifier.from_pretrained(trained_classifier.run_dir / "last", device="cpu"))
    paths = [str(path) for path in archives.values()]
    code = f"import json, seqkit; print(json.dumps([[[p.label, p.probabilities] for p in seqkit.load(path, device='cpu').predict({TEXTS!r})] for path in {paths!r}]))"
    there = json.loads(run_python(code, tmp_path))
    assert there == [here, here]
    with zipfile.ZipFile(archives[".zip"]) as bundle:
        assert {Path(name).name for name in bundle.namelist()} == CHECKPOINT_FILES
    digests = sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in archives.values())
    assert sorted(entry.name for entry in (cache / "checkpoints").iterdir()) == digests  # unpacked once each, by content
    assert hub.resolve(archives[".zip"]) == cache / "checkpoints" / hashlib.sha256(archives[".zip"].read_bytes()).hexdigest()


def test_a_url_is_downloaded_once_then_loads_from_the_cache_even_offline(server, archives, monkeypatch):
    server.files["/models/spam.tar.gz"] = archives[".tar.gz"].read_bytes()
    url = f"{server.url}/models/spam.tar.gz"
    first = seqkit.load(url, device="cpu")
    second = seqkit.Classifier.from_pretrained(url, device="cpu")
    assert server.requests == ["/models/spam.tar.gz"]
    assert _predictions(first) == _predictions(second)

    monkeypatch.setenv("SEQKIT_OFFLINE", "1")
    assert _predictions(seqkit.load(url, device="cpu")) == _predictions(first)
    info = CliRunner().invoke(main, ["info", url])  # a URL passes through the CLI unchanged
    assert info.exit_code == 0, info.stderr
    assert f"checkpoint   {url}" in info.output and "task         classification" in info.output
    with pytest.raises(CheckpointError, match=r"/models/other.tar.gz: it is not in the cache .* and SEQKIT_OFFLINE is set"):
        seqkit.load(f"{server.url}/models/other.tar.gz")
    assert server.requests == ["/models/spam.tar.gz"]  # offline: the network was never touched


def test_the_sha256_in_the_url_or_the_argument_is_verified(server, archives, cache, monkeypatch):
    data = archives[".zip"].read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    server.files["/spam.zip"] = data
    url = f"{server.url}/spam.zip"
    with pytest.raises(CheckpointError, match=rf"{url}: SHA-256 mismatch: expected {'0' * 64}, got {digest}"):
        seqkit.load(f"{url}#sha256={'0' * 64}")
    assert _cache_entries(cache) == []
    seqkit.load(f"{url}#sha256={digest.upper()}", device="cpu")
    seqkit.load(url, device="cpu", sha256=digest)
    assert len(server.requests) == 2  # the refused download, then one for both good loads
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):  # another hash than the cached copy's: fetched again, refused
        seqkit.load(url, sha256="1" * 64)
    assert len(server.requests) == 3
    monkeypatch.setenv("SEQKIT_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="its cached copy has a different SHA-256 .* SEQKIT_OFFLINE is set"):
        seqkit.load(url, sha256="1" * 64)
    with pytest.raises(CheckpointError, match="two different SHA-256s given"):
        seqkit.load(f"{url}#sha256={digest}", sha256="1" * 64)
    with pytest.raises(CheckpointError, match="sha256 'abc' is not 64 hexadecimal digits"):
        seqkit.load(f"{url}#sha256=abc")
    with pytest.raises(CheckpointError, match=rf"spam.zip: SHA-256 mismatch: expected {'2' * 64}"):  # a local archive too
        seqkit.load(archives[".zip"], sha256="2" * 64)


def test_failed_downloads_are_one_clear_error_and_leave_nothing_in_the_cache(server, cache):
    server.files["/garbage.tar.gz"] = b"<html>this is not the archive you are looking for</html>\n" * 50
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/spam.tar.gz"
    for url, message in [
        (f"{server.url}/missing.tar.gz", "download failed: HTTP 404"),
        (f"{server.url}/garbage.tar.gz", "not a .tar.gz or .zip archive"),
        (closed, r"download failed \(.*refused"),
    ]:
        with pytest.raises(CheckpointError, match=rf"^{url}: {message}"):
            seqkit.load(url)
        assert _cache_entries(cache) == []
    result = CliRunner().invoke(main, ["predict", f"{server.url}/missing.tar.gz", "-"], input="hello\n")
    assert result.exit_code == 2 and "Traceback" not in result.output + result.stderr
    assert result.stderr == f"seqkit: error: {server.url}/missing.tar.gz: download failed: HTTP 404 Not Found\n"


def _tar_with(path: Path, checkpoint: Path, *extra: tarfile.TarInfo) -> Path:
    """A .tar.gz of ``checkpoint``'s files under spam/, then the members ``extra``
    (after the good files, so a refusal comes after some were unpacked)."""
    with tarfile.open(path, "w:gz") as bundle:
        for file in sorted(checkpoint.iterdir()):
            bundle.add(file, f"spam/{file.name}")
        for info in extra:
            bundle.addfile(info, io.BytesIO(b"x" * info.size))
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


UNSAFE_TAR_MEMBERS = {
    "absolute path": (lambda outside: _member(str(outside / "evil"), size=1), "has an absolute path"),
    "dot-dot": (lambda outside: _member("spam/../../../../evil", size=1), "has a '..' in its path"),
    "symlink": (lambda outside: _member("spam/evil", tarfile.SYMTYPE, linkname=str(outside)), "is a symbolic link"),
    "hardlink": (lambda outside: _member("spam/evil", tarfile.LNKTYPE, linkname="spam/config.yaml"), "is a hard link"),
    "device": (lambda outside: _member("spam/evil", tarfile.CHRTYPE), "is a character device"),
    "fifo": (lambda outside: _member("spam/evil", tarfile.FIFOTYPE), "is a FIFO"),
}


@pytest.mark.parametrize("kind", list(UNSAFE_TAR_MEMBERS))
def test_unsafe_tar_members_are_refused_and_nothing_is_unpacked(kind, trained_classifier, cache, tmp_path):
    make, message = UNSAFE_TAR_MEMBERS[kind]
    outside = tmp_path / "outside"
    archive = _tar_with(tmp_path / "evil.tar.gz", trained_classifier.run_dir / "best", make(outside))
    with pytest.raises(CheckpointError, match=rf"evil.tar.gz: refused: member '.*evil' {message}"):
        seqkit.load(archive)
    assert _cache_entries(cache) == [] and not outside.exists()


@pytest.mark.parametrize("name, mode, message", [
    ("../evil", 0o644, "has a '..' in its path"),
    ("/tmp/evil", 0o644, "has an absolute path"),
    ("spam\\..\\..\\evil", 0o644, "has a '..' in its path"),
    ("spam/evil", stat.S_IFLNK | 0o777, "is a symbolic link"),
])  # fmt: skip
def test_unsafe_zip_members_are_refused_and_nothing_is_unpacked(name, mode, message, trained_classifier, cache, tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in sorted((trained_classifier.run_dir / "best").iterdir()):
            bundle.write(file, f"spam/{file.name}")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        bundle.writestr(info, "/etc/passwd")
    with pytest.raises(CheckpointError, match="evil.zip: refused: member .* " + message):
        seqkit.load(archive)
    assert _cache_entries(cache) == []


def test_archives_too_large_or_with_too_many_members_are_refused(archives, cache, monkeypatch, server):
    monkeypatch.setenv("SEQKIT_MAX_ARCHIVE_BYTES", "10000")
    for archive in archives.values():
        with pytest.raises(CheckpointError, match=r"spam.(tar.gz|zip): refused: unpacks to more than 10,000 bytes"):
            seqkit.load(archive)
    server.files["/spam.zip"] = archives[".zip"].read_bytes()
    monkeypatch.setenv("SEQKIT_MAX_ARCHIVE_BYTES", "1000")  # a download larger than the limit stops early
    with pytest.raises(CheckpointError, match=r"/spam.zip: refused: larger than 1,000 bytes"):
        seqkit.load(f"{server.url}/spam.zip")
    monkeypatch.delenv("SEQKIT_MAX_ARCHIVE_BYTES")
    monkeypatch.setattr(hub, "MAX_ARCHIVE_MEMBERS", 3)
    with pytest.raises(CheckpointError, match="spam.tar.gz: refused: more than 3 members"):
        seqkit.load(archives[".tar.gz"])
    assert _cache_entries(cache) == []


def test_broken_archives_and_sources_are_named(archives, cache, tmp_path):
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archives[".tar.gz"].read_bytes()[:3000])
    with pytest.raises(CheckpointError, match=r"truncated.tar.gz: damaged or unreadable archive"):
        seqkit.load(truncated)
    not_a_checkpoint = tmp_path / "notes.zip"
    with zipfile.ZipFile(not_a_checkpoint, "w") as bundle:
        bundle.writestr("notes/README.txt", "hello")
    with pytest.raises(CheckpointError, match=r"notes.zip: holds no seqkit checkpoint \(no config.yaml"):
        seqkit.load(not_a_checkpoint)
    text = tmp_path / "model.txt"
    text.write_text("not an archive\n" * 100)
    with pytest.raises(CheckpointError, match="model.txt: not a .tar.gz or .zip archive"):
        seqkit.load(text)
    assert _cache_entries(cache) == []
    with pytest.raises(CheckpointError, match="is not an archive file"):
        seqkit.load(tmp_path, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="elsewhere.zip: archive not found"):
        seqkit.load(tmp_path / "elsewhere.zip")


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_a_planted_pickle_is_refused_and_never_runs(trained_classifier, tmp_path):
    marker = tmp_path / "PWNED"
    checkpoint = shutil.copytree(trained_classifier.run_dir / "last", tmp_path / "last")
    torch.save({"step": 1, "payload": _RunsCode(marker)}, checkpoint / "trainer_state.pt")
    with pytest.raises(CheckpointError, match=r"last/trainer_state.pt: refused: unpickling it would run code"):
        load_trainer_state(checkpoint)
    seqkit.load(checkpoint, device="cpu")  # loading the model never reads the trainer state
    weights_only = shutil.copytree(trained_classifier.run_dir / "best", tmp_path / "best")
    torch.save({"weights": _RunsCode(marker)}, weights_only / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"best/model.safetensors: unreadable or truncated"):
        seqkit.load(weights_only)
    assert not marker.exists()
    torch.load(checkpoint / "trainer_state.pt", weights_only=False)  # the pickle is live: loaded unsafely, it runs
    assert marker.exists()


def test_a_missing_tokenizer_or_a_newer_format_is_one_clear_error(trained_classifier, tmp_path):
    no_tokenizer = shutil.copytree(trained_classifier.run_dir / "best", tmp_path / "no-tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no-tokenizer/tokenizer.json: missing: a checkpoint needs its tokenizer"):
        seqkit.load(no_tokenizer)
    newer = shutil.copytree(trained_classifier.run_dir / "best", tmp_path / "newer")
    config = (newer / "config.yaml").read_text()
    assert f"format_version: {FORMAT_VERSION}\n" in config
    (newer / "config.yaml").write_text(config.replace(f"format_version: {FORMAT_VERSION}\n", f"format_version: {FORMAT_VERSION + 1}\n"))
    result = CliRunner().invoke(main, ["info", str(newer)])
    assert result.exit_code == 2 and "Traceback" not in result.output + result.stderr
    assert result.stderr.startswith(f"seqkit: error: {newer}/config.yaml: written in checkpoint format {FORMAT_VERSION + 1}, newer than")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("format-*")), ids=lambda path: path.name)
def test_a_checkpoint_of_each_released_format_still_loads_and_predicts(fixture):
    tagger = seqkit.Tagger.from_pretrained(fixture / "tagger", device="cpu")
    assert f"format-{tagger.info['format_version']}" == fixture.name
    expected = json.loads((fixture / "expected.json").read_text(encoding="utf-8"))
    assert [doc.tags for doc in tagger.tag(expected["texts"])] == expected["tags"]
