"""Sharing on the Hugging Face Hub, against a fake Hub on 127.0.0.1 (never the real one):
export --format hub writes a folder and a model card; that folder, served as a repository,
loads by hf://USER/NAME and predicts as the local checkpoint; @REVISION picks a commit's
files; the cache serves a second load offline; each failure is one line from the CLI."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from click.testing import CliRunner

import seqkit
from seqkit.cli import main
from seqkit.errors import CheckpointError

TEXTS = ["WIN a FREE cruise, click here now!!", "Meeting moved to Tuesday, see agenda attached"]


class FakeHub:
    """The endpoints huggingface_hub's ``snapshot_download`` calls for a model repository:
    ``GET /api/models/REPO/revision/REV`` (the commit), ``GET /api/models/REPO/tree/COMMIT``
    (the file list) and ``HEAD``/``GET /REPO/resolve/REV/FILE`` (with ``X-Repo-Commit`` and
    ``ETag``); errors carry the ``X-Error-Code`` the client reads (RepoNotFound, ...)."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Any]] = {}  # repo id -> {"refs": {name: commit}, "commits": {commit: {file: bytes}}}
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def publish(self, repo: str, folder: Path | dict[str, bytes], *, refs: tuple[str, ...] = ("main",)) -> str:
        """Commit ``folder``'s files to ``repo`` under ``refs``; returns the commit hash."""
        files = folder if isinstance(folder, dict) else {path.name: path.read_bytes() for path in sorted(folder.iterdir())}
        commit = hashlib.sha1(repr(sorted(files.items())).encode() + repo.encode()).hexdigest()
        entry = self.repos.setdefault(repo, {"refs": {}, "commits": {}})
        entry["commits"][commit] = files
        entry["refs"].update({ref: commit for ref in refs})
        return commit

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, handler: http.server.BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append(f"{handler.command} {handler.path}")
        parts = [unquote(part) for part in urlsplit(handler.path).path.strip("/").split("/")]
        api = parts[:2] == ["api", "models"]
        words = parts[2:] if api else parts
        kind_at = next((i for i, word in enumerate(words) if word in (("revision", "tree") if api else ("resolve",))), None)
        if kind_at is None:
            return self.send(handler, 404, {"error": "not found"}, "RepoNotFound", body)
        repo, kind, revision, rest = "/".join(words[:kind_at]), words[kind_at], words[kind_at + 1], "/".join(words[kind_at + 2 :])
        if repo not in self.repos:
            return self.send(handler, 401, {"error": "Repository not found"}, "RepoNotFound", body)  # the Hub's answer: 401, not 404
        entry = self.repos[repo]
        commit = entry["refs"].get(revision, revision if revision in entry["commits"] else None)
        if commit is None:
            return self.send(handler, 404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound", body)
        files = entry["commits"][commit]
        if kind == "revision":
            return self.send(handler, 200, {"id": repo, "modelId": repo, "sha": commit, "siblings": [{"rfilename": name} for name in files]}, None, body)
        if kind == "tree":
            listing = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()} for name, data in files.items()]
            return self.send(handler, 200, listing, None, body)
        if rest not in files:
            return self.send(handler, 404, {"error": "Entry not found"}, "EntryNotFound", body, commit)
        data = files[rest]
        handler.send_response(200)
        for name, value in (("X-Repo-Commit", commit), ("ETag", f'"{hashlib.sha256(data).hexdigest()}"'), ("Content-Length", str(len(data)))):
            handler.send_header(name, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    @staticmethod
    def send(handler, status: int, payload: Any, error_code: str | None, body: bool, commit: str | None = None) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (("X-Error-Code", error_code), ("X-Repo-Commit", commit)):
            if value:
                handler.send_header(name, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A fake Hub, with HF_ENDPOINT naming it (and huggingface_hub's import-time default
    patched too, so nothing can reach huggingface.co), HF_HOME in a tmp dir, online."""
    import huggingface_hub.constants

    hub = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # whatever the environment said at import
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    monkeypatch.setenv("SEQKIT_CACHE", str(tmp_path / "seqkit-cache"))
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def quick_classifier(tmp_path_factory):
    """conftest's tiny spam classifier, trained 3 epochs: what loads matters here, not how well it learned."""
    from conftest import _write_classifier_data
    from seqkit.config import load_recipe
    from seqkit.train import train

    recipe = _write_classifier_data(tmp_path_factory.mktemp("classifier"))
    return train(load_recipe(recipe, ["train.epochs=3", "train.early_stopping=null"]), quiet=True)


@pytest.fixture(scope="module")
def hub_folder(quick_classifier, tmp_path_factory) -> Path:
    """The trained classifier's last/ checkpoint (with its trainer state) exported as a Hub folder by the CLI."""
    folder = tmp_path_factory.mktemp("export") / "spam-lstm"
    result = CliRunner().invoke(main, ["export", str(quick_classifier.run_dir / "last"), str(folder), "--format", "hub"])
    assert result.exit_code == 0, result.output + result.stderr
    assert f"hf upload USER/spam-lstm {folder}" in result.stdout
    return folder


def _front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card[4 : card.index("\n---\n", 4)])


def test_export_hub_writes_the_checkpoint_files_and_a_model_card(hub_folder, quick_classifier):
    assert sorted(path.name for path in hub_folder.iterdir()) == ["README.md", "config.yaml", "labels.json", "model.safetensors", "tokenizer.json"]
    card = (hub_folder / "README.md").read_text(encoding="utf-8")
    meta = _front_matter(card)
    assert meta["library_name"] == "seqkit" and meta["pipeline_tag"] == "text-classification"
    assert {"seqkit", "pytorch", "classification"} <= set(meta["tags"])
    measured = yaml.safe_load((hub_folder / "config.yaml").read_text(encoding="utf-8"))["checkpoint"]["metrics"]["valid"]
    (result,) = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == "spam-lstm" and result["task"]["type"] == "text-classification"
    assert result["dataset"]["name"] == "valid.jsonl" and result["dataset"]["split"] == "validation"
    values = {metric["type"]: metric["value"] for metric in result["metrics"]}
    assert values == {name: value for name, value in measured.items() if isinstance(value, float)} and "accuracy" in values  # not the counts
    assert set(meta["metrics"]) == set(values)
    assert 'seqkit.load("hf://USER/spam-lstm")' in card and "## Recipe" in card and "task: classification" in card
    # like the other formats: an existing export needs --overwrite, and a checkpoint directory is never replaced
    again = CliRunner().invoke(main, ["export", str(quick_classifier.run_dir / "last"), str(hub_folder), "--format", "hub"])
    assert again.exit_code == 2 and "already holds a Hub folder: pass --overwrite" in again.stderr
    onto = CliRunner().invoke(main, ["export", str(hub_folder), str(quick_classifier.run_dir / "best"), "--format", "hub", "--overwrite"])
    assert onto.exit_code == 2 and "holds a checkpoint, not a Hub folder" in onto.stderr


def test_repo_id_names_the_repository_in_the_card(quick_classifier, tmp_path):
    folder = tmp_path / "spam-card"
    result = CliRunner().invoke(main, ["export", str(quick_classifier.run_dir / "best"), str(folder), "--format", "hub", "--repo-id", "alice/spam-lstm"])
    assert result.exit_code == 0 and "hf upload alice/spam-lstm " in result.stdout
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert 'seqkit.load("hf://alice/spam-lstm")' in card and "`hf upload alice/spam-lstm .`" in card and "USER" not in card
    for bad in ("alice", "alice/../x", "alice/spam lstm"):
        refused = CliRunner().invoke(main, ["export", str(quick_classifier.run_dir / "best"), str(tmp_path / "other"), "--format", "hub", "--repo-id", bad])
        assert refused.exit_code != 0 and "--repo-id" in refused.stderr and "USER/NAME" in refused.stderr and "Traceback" not in refused.output
    wrong = CliRunner().invoke(main, ["export", str(quick_classifier.run_dir / "best"), str(tmp_path / "x.tar.gz"), "--repo-id", "alice/spam"])
    assert wrong.exit_code == 2 and "goes with --format hub" in wrong.stderr and not (tmp_path / "x.tar.gz").exists()
    assert not (tmp_path / "other").exists()


def test_hf_loads_predict_as_the_local_checkpoint_and_the_cache_serves_offline(fake_hub, hub_folder, quick_classifier, tmp_path, monkeypatch):
    fake_hub.publish("user/spam-lstm", hub_folder)
    local = seqkit.load(quick_classifier.run_dir / "last")
    remote = seqkit.Classifier.from_pretrained("hf://user/spam-lstm")
    assert remote.predict(TEXTS) == local.predict(TEXTS)
    cached = list((tmp_path / "hf-home" / "hub" / "models--user--spam-lstm" / "snapshots").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file() and not (cached[0] / "README.md").exists()
    assert "GET /api/models/user/spam-lstm/revision/main" in fake_hub.requests and not any("trainer_state" in request for request in fake_hub.requests)
    fake_hub.stop()  # no Hub at all now: the cache answers
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert seqkit.load("hf://user/spam-lstm").predict(TEXTS) == local.predict(TEXTS)
    result = CliRunner().invoke(main, ["info", "hf://user/spam-lstm"])
    assert result.exit_code == 0 and "task         classification" in result.stdout
    missing = CliRunner().invoke(main, ["info", "hf://user/other"])
    assert missing.exit_code == 2 and "Traceback" not in missing.output + missing.stderr
    assert missing.stderr.strip().splitlines() == [f"seqkit: error: hf://user/other: not in the Hugging Face cache ({tmp_path / 'hf-home' / 'hub'}) "
                                                   "and HF_HUB_OFFLINE is set, so seqkit does not download it"]  # fmt: skip


def test_a_revision_picks_that_commits_files(fake_hub, hub_folder):
    files = {path.name: path.read_bytes() for path in hub_folder.iterdir()}
    config = yaml.safe_load(files["config.yaml"])
    older = {**files, "config.yaml": yaml.safe_dump({**config, "checkpoint": {**config["checkpoint"], "step": 1}}).encode()}
    first = fake_hub.publish("user/spam", older, refs=("v1",))
    fake_hub.publish("user/spam", files, refs=("main",))
    assert seqkit.load("hf://user/spam").info["step"] == config["checkpoint"]["step"] != 1
    assert seqkit.load("hf://user/spam@v1").info["step"] == 1
    assert seqkit.load(f"hf://user/spam@{first}").info["step"] == 1
    assert seqkit.load("hf://user/spam@main").info["step"] == config["checkpoint"]["step"]


def test_each_failure_is_one_line_from_the_cli(fake_hub, hub_folder, monkeypatch):
    fake_hub.publish("user/spam", hub_folder)
    fake_hub.publish("user/readme-only", {"README.md": b"# not a model\n"})
    fake_hub.publish("user/no-weights", {"config.yaml": (hub_folder / "config.yaml").read_bytes()})
    where = fake_hub.url
    cases = {
        "hf://user/nothing": f"hf://user/nothing: repository user/nothing not found on the Hub ({where}); a private one needs HF_TOKEN or hf auth login",
        "hf://user/spam@v9": f"hf://user/spam@v9: revision 'v9' not found in the Hub repository user/spam ({where}): name a branch, tag or commit it has",
        "hf://user/readme-only": "hf://user/readme-only: not a seqkit checkpoint: the repository has no config.yaml and no model.safetensors at its top level",
        "hf://user/no-weights": "hf://user/no-weights: not a seqkit checkpoint: the repository has no model.safetensors at its top level",
        "hf://user/spam/extra": "hf://user/spam/extra: not a Hub reference: write hf://USER/NAME, optionally @REVISION (a branch, tag or commit)",
    }
    for source, line in cases.items():
        result = CliRunner().invoke(main, ["predict", source, "-"], input="hello\n")
        assert result.exit_code == 2, (source, result.output)
        assert result.stderr.strip().splitlines() == [f"seqkit: error: {line}"], source
        assert "Traceback" not in result.output + result.stderr
    fake_hub.stop()  # the Hub unreachable, and the repository not cached: the line says how to work offline
    result = CliRunner().invoke(main, ["info", "hf://user/spam"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"hf://user/spam: cannot reach the Hub ({where}" in result.stderr and "set HF_HUB_OFFLINE=1" in result.stderr
    with pytest.raises(CheckpointError, match="pin a Hub checkpoint by its commit"):
        seqkit.load("hf://user/spam", sha256="0" * 64)
