"""``seqkit serve``: the real server on 127.0.0.1 (in a thread, or a subprocess for Ctrl-C)
answers what the Python API gives, batches concurrent requests, refuses bad ones with one
JSON message, and stops cleanly."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

import seqkit  # noqa: E402
from seqkit.cli import main  # noqa: E402
from seqkit.config import load_recipe  # noqa: E402
from seqkit.serve import Limits, build_app, listen  # noqa: E402
from seqkit.train import train  # noqa: E402

from conftest import _write_classifier_data, _write_tagger_data  # noqa: E402
from helpers import ROOT, WNUT, first_sentences  # noqa: E402

LIMITS = Limits(max_batch=64, max_wait=0.05, max_body=4_000, max_text=300, max_texts=40)  # small, to reach each limit cheaply


@contextmanager
def running(path, limits: Limits = LIMITS, runtime: str = "torch"):
    """The service of the checkpoint at ``path`` on a free port, in a thread."""
    model = seqkit.load(path, runtime=runtime)
    app = build_app(model, str(path), limits)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield SimpleNamespace(port=sock.getsockname()[1], model=model, batcher=app.state.batcher)
    finally:
        server.should_exit = True
        thread.join(10)


def call(port: int, method: str, path: str, body=None, headers=None):
    """``(status, JSON or text, headers)`` of one request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode() if isinstance(body, (dict, list, str)) else body
    connection.request(method, path, body=data, headers=headers or {})
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    kind = response.getheader("content-type", "")
    return response.status, json.loads(raw) if kind.startswith("application/json") else raw.decode(), dict(response.getheaders())


def close(a, b) -> bool:
    """Equal, floats to 1e-5 (a batch of other texts may round the last bits apart)."""
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, abs=1e-5)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(close, a, b))
    return a == b


def tweets(count: int) -> list[str]:
    blocks = first_sentences(WNUT / "train.conll", count).strip().split("\n\n")
    return [" ".join(line.split("\t")[0] for line in block.splitlines()) for block in blocks]


@pytest.fixture(scope="module")
def tagger_checkpoint(tmp_path_factory):
    """A tagger fitted to 40 tweets in a few seconds: enough to find some of their entities."""
    recipe = _write_tagger_data(tmp_path_factory.mktemp("tagger"))
    return train(load_recipe(recipe, ["train.epochs=12", "train.lr=0.03", "train.eval_every=null"]), quiet=True).run_dir / "best"


@pytest.fixture(scope="module")
def tagger_service(tagger_checkpoint):
    with running(tagger_checkpoint) as service:
        yield service


def test_tagger_answers_as_the_api_and_predict_jsonl(tagger_service, tagger_checkpoint):
    texts = tweets(6)
    status, answer, headers = call(tagger_service.port, "POST", "/predict", {"text": texts[0]})
    assert status == 200 and headers["content-type"] == "application/json"
    assert close(answer, tagger_service.model.tag(texts[0]).to_json())
    assert any(answer["spans"] for answer in call(tagger_service.port, "POST", "/predict", {"texts": texts})[1])  # spans, with scores
    status, answers, _ = call(tagger_service.port, "POST", "/predict", {"texts": texts + [""]})
    assert status == 200 and close(answers, [doc.to_json() for doc in tagger_service.model.tag(texts + [""])])
    lines = CliRunner().invoke(main, ["predict", str(tagger_checkpoint), "--format", "jsonl"], input="\n".join(texts)).stdout.splitlines()
    assert close(answers[:-1], [json.loads(line) for line in lines])  # the same JSON as seqkit predict --format jsonl
    assert call(tagger_service.port, "POST", "/predict", {"texts": []})[:2] == (200, [])


def test_health_info_and_page(tagger_service, tagger_checkpoint):
    assert call(tagger_service.port, "GET", "/health")[:2] == (200, {"status": "ok"})
    status, info, _ = call(tagger_service.port, "GET", "/info")
    printed = CliRunner().invoke(main, ["info", str(tagger_checkpoint)]).stdout.splitlines()
    assert status == 200 and info["task"] == "tagging"
    shown = {key: value for key, value in info.items() if key != "service"}
    assert [f"{key.replace('_', ' '):<12} {value}" for key, value in shown.items()] == printed  # seqkit info's lines, as JSON
    assert set(info["service"]) == {"batches", "requests", "texts", "limits"} and info["service"]["limits"]["max_texts"] == 40
    status, page, headers = call(tagger_service.port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert '<form id="form">' in page and '<textarea id="text"' in page and '"tagging"' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "http://" not in page and "https://" not in page  # nothing from outside


LONG = "word " * 61  # 305 characters: over LIMITS.max_text
BAD = [
    ("POST", "/predict", b"{not json", 400, "the body is not valid JSON: Expecting property name"),
    ("POST", "/predict", b"", 400, 'an empty body: send a JSON object such as {"text": "..."}'),
    ("POST", "/predict", b"  \n", 400, "an empty body"),
    ("POST", "/predict", b'{"text": "\xff"}', 400, "the body is not valid JSON: 'utf-8' codec can't decode"),
    ("POST", "/predict", "a bare string", 400, 'expected a JSON object such as {"text": "..."}, not a string'),
    ("POST", "/predict", ["a", "list"], 400, "not a list"),
    ("POST", "/predict", {}, 400, 'give "text" (a string) or "texts" (a list of strings)'),
    ("POST", "/predict", {"text": "a", "texts": ["b"]}, 400, 'give "text" (a string) or "texts" (a list of strings), not both'),
    ("POST", "/predict", {"txt": "a"}, 400, "unknown field 'txt'; this model takes 'text', 'texts'"),
    ("POST", "/predict", {"text": 3}, 400, '"text" must be a string, not a number'),
    ("POST", "/predict", {"text": None}, 400, '"text" must be a string, not null'),
    ("POST", "/predict", {"texts": "a"}, 400, '"texts" must be a list of strings, not a string'),
    ("POST", "/predict", {"texts": ["a", ["b"]]}, 400, '"texts" item 1 must be a string, not a list'),
    ("POST", "/predict", b'{"text": "\\ud83d"}', 400, '"text" holds a lone surrogate at character 0, which is not text'),
    ("POST", "/predict", {"text": LONG}, 400, '"text" has 305 characters; the limit is 300 (--max-text)'),
    ("POST", "/predict", {"texts": ["a"] * 41}, 400, '"texts" holds 41 texts; the limit is 40 a request (--max-texts)'),
    ("POST", "/predict", {"texts": ["x" * 200] * 25}, 413, "bytes; the limit is 4,000 (--max-body)"),
    ("GET", "/predict", None, 405, "GET is not allowed on /predict; use POST"),
    ("POST", "/health", b"{}", 405, "POST is not allowed on /health; use GET"),
    ("DELETE", "/", None, 405, "DELETE is not allowed on /"),
    ("GET", "/nowhere", None, 404, "no such path /nowhere; the service answers GET /, GET /health, GET /info and POST /predict"),
]


@pytest.mark.parametrize("method, path, body, status, message", BAD, ids=[f"{row[3]}-{index}" for index, row in enumerate(BAD)])
def test_bad_requests_get_one_json_message(tagger_service, method, path, body, status, message):
    got, answer, _ = call(tagger_service.port, method, path, body)
    assert got == status and set(answer) == {"error"} and message in answer["error"], answer
    assert call(tagger_service.port, "GET", "/health")[0] == 200  # still serving


def test_a_body_without_length_over_the_limit_is_refused(tagger_service):
    connection = http.client.HTTPConnection("127.0.0.1", tagger_service.port, timeout=30)
    connection.request("POST", "/predict", body=iter([b'{"texts": [', b'"aaaa",' * 1_000, b'"a"]}']), encode_chunked=True)  # chunked: no Content-Length
    response = connection.getresponse()
    assert response.status == 413 and "over 4,000 bytes, the limit (--max-body)" in json.loads(response.read())["error"]


def test_a_model_failure_is_a_500_and_the_service_goes_on(tagger_service, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of cheese")

    monkeypatch.setattr(tagger_service.model, "tag", broken)
    assert call(tagger_service.port, "POST", "/predict", {"text": "hello"})[:2] == (500, {"error": "the model failed: RuntimeError: out of cheese"})
    monkeypatch.undo()
    assert call(tagger_service.port, "POST", "/predict", {"text": "hello"})[0] == 200


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(tagger_service):
    texts = tweets(32)
    expected = [doc.to_json() for doc in tagger_service.model.tag(texts)]
    before = tagger_service.batcher.batches
    barrier, answers = threading.Barrier(len(texts)), [None] * len(texts)

    def ask(index: int) -> None:
        barrier.wait()
        answers[index] = call(tagger_service.port, "POST", "/predict", {"text": texts[index]})[:2]

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(status == 200 for status, _ in answers)
    assert all(close(answer, want) for (_, answer), want in zip(answers, expected))
    batches = tagger_service.batcher.batches - before
    assert 1 <= batches < len(texts), batches  # batched: fewer model calls than requests
    assert call(tagger_service.port, "GET", "/info")[1]["service"]["batches"] == tagger_service.batcher.batches


def test_a_request_alone_does_not_wait_for_company(tagger_checkpoint):
    """A batch waits only while other requests are being read: with a 30 s ``max_wait``,
    one request at a time is still answered at once (the bound is 10 s, far from both)."""
    with running(tagger_checkpoint, Limits(max_wait=30.0)) as service:
        for text in tweets(3):
            started = time.monotonic()
            status, answer, _ = call(service.port, "POST", "/predict", {"text": text})
            assert status == 200 and answer["text"] == text and time.monotonic() - started < 10
        assert service.batcher.batches == 3 and service.batcher.arriving == 0


def test_an_onnx_export_serves_the_same_answers(tagger_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from seqkit.onnx_export import export_onnx

    exported, _ = export_onnx(tagger_checkpoint, tmp_path / "onnx")
    texts = tweets(4)
    expected = [doc.to_json() for doc in seqkit.load(tagger_checkpoint).tag(texts)]
    with running(exported, runtime="onnx") as service:
        status, answers, _ = call(service.port, "POST", "/predict", {"texts": texts})
        assert status == 200 and close(answers, expected)
        assert call(service.port, "GET", "/info")[1]["task"] == "tagging"
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "--runtime [torch|onnx]" in help_text


def test_classifier_answers_as_the_api(tmp_path):
    texts = ["WIN a FREE cruise, click here", "see you at lunch tomorrow", ""]
    run = train(load_recipe(_write_classifier_data(tmp_path), ["train.max_steps=3"]), quiet=True).run_dir
    with running(run / "best") as service:
        status, answers, _ = call(service.port, "POST", "/predict", {"texts": texts})
        assert status == 200 and close(answers, [{"text": text, **p.to_json()} for text, p in zip(texts, service.model.predict(texts))])
        status, answer, _ = call(service.port, "POST", "/predict", {"text": texts[0]})
        assert set(answer) == {"text", "label", "probabilities"} and answer["label"] in answer["probabilities"]


def test_generator_answers_as_the_api_within_the_ranges(trained_generator):
    with running(trained_generator.run_dir / "best") as service:
        status, answer, _ = call(service.port, "POST", "/predict", {"condition": "female", "num": 3, "seed": 1, "max_tokens": 8, "temperature": 0.8})
        assert status == 200 and answer == {"condition": "female", "texts": service.model.generate("female", num=3, seed=1, max_length=8, temperature=0.8)}
        assert call(service.port, "POST", "/predict", {"condition": "robot"})[:2] == (400, {"error": "unknown condition 'robot'; this model knows 'female', 'male'"})
        for body, message in [({"condition": "male", "temperature": -1}, "temperature: expected a number >= 0 (0: greedy), not -1"),
                              ({"num": 17}, "num: this service gives at most 16, not 17"), ({"max_tokens": 2_001}, "max_tokens: this service gives at most 2,000, not 2,001"), ({"max_tokens": 0}, "max_tokens: expected an integer >= 1"),
                              ({"beam": 2, "top_k": 3}, "top_k: beam search samples nothing"), ({"seed": "1"}, "seed: expected an integer"),
                              ({"prompt": "x"}, "unknown field 'prompt'")]:  # fmt: skip
            status, answer, _ = call(service.port, "POST", "/predict", body)
            assert status == 400 and message in answer["error"], (body, answer)


def test_language_model_continues_a_prompt(tiny_recipe):
    run = train(load_recipe(tiny_recipe, ["train.max_steps=3"]), quiet=True).run_dir
    with running(run / "best") as service:
        status, answer, _ = call(service.port, "POST", "/predict", {"prompt": "the whale", "max_tokens": 6, "seed": 3})
        assert status == 200 and answer == {"prompt": "the whale", "text": service.model.generate("the whale", max_tokens=6, seed=3)}
        assert call(service.port, "POST", "/predict", {"prompt": "the", "max_tokens": 2_001})[1] == {"error": "max_tokens: this service gives at most 2,000, not 2,001"}
        assert call(service.port, "POST", "/predict", {"prompt": "the", "beam": 2, "num": 2})[0] == 400


def _serve_subprocess(checkpoint, *args: str) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, "-m", "seqkit", "serve", str(checkpoint), "--port", "0", *args], stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    for line in process.stderr:
        found = re.search(r"on http://127\.0\.0\.1:(\d+) ", line)
        if found:
            return process, int(found.group(1))
    raise AssertionError(f"the server did not start (exit {process.wait()})")


def test_ctrl_c_stops_the_server_in_one_line(tagger_checkpoint):
    process, port = _serve_subprocess(tagger_checkpoint, "--max-wait-ms", "1")
    try:
        assert call(port, "POST", "/predict", {"text": "hello world"})[0] == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(30) in (0, 130)
        assert process.stderr.read().strip() == "seqkit: interrupted"  # one line, no traceback
    finally:
        process.kill()


def test_cli_stays_light_and_names_the_missing_extra(tmp_path):
    code = "import sys, seqkit.cli; print('torch' in sys.modules, 'starlette' in sys.modules, 'uvicorn' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.split() == ["False"] * 3
    code = "import sys; sys.modules['uvicorn'] = None; from seqkit.cli import main; main(['serve', 'anything'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stderr == "seqkit: error: seqkit serve needs uvicorn: pip install 'seqkit[serve]'\n"
    done = subprocess.run([sys.executable, "-m", "seqkit", "serve", "x", "--port", "70000"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--port" in done.stderr


def _browser():
    """A headless Chromium driven by selenium, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    driver_path = shutil.which("chromedriver") or shutil.which("chromium-driver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if driver_path is None or binary is None:
        pytest.skip("no headless browser here (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_the_page_highlights_entities_in_a_browser(tagger_service):
    text = next(text for text, doc in zip(tweets(12), tagger_service.model.tag(tweets(12))) if doc.spans)
    span = tagger_service.model.tag(text).spans[0]
    browser = _browser()  # skips, saying why, where selenium or a headless Chromium is missing (CI)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        browser.get(f"http://127.0.0.1:{tagger_service.port}/")
        browser.find_element(By.ID, "text").send_keys(text)
        browser.find_element(By.ID, "submit").click()
        marks = WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#result mark"))
        assert marks[0].get_attribute("data-label") == span.label and marks[0].text.startswith(span.text)
    finally:
        browser.quit()


def test_the_listening_socket_sends_without_nagle_delay():
    # uvicorn writes a response's headers and body apart: with Nagle's algorithm on, a
    # kept-alive connection's body waited for the client's delayed ACK (44 ms a request)
    import socket

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client = socket.create_connection(sock.getsockname())
        accepted, _ = sock.accept()
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0  # what each connection inherits
        accepted.close()
        client.close()
    finally:
        sock.close()


def test_the_load_benchmark_plots_latency_against_clients(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import serve_load
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import xml.etree.ElementTree as ElementTree

    results = [{"runtime": runtime, "clients": clients, "median_ms": scale * clients, "p99_ms": 3 * scale * clients}
               for runtime, scale in (("torch", 4.0), ("onnx", 2.0), ("onnx-int8", 1.0)) for clients in (1, 4, 16)]  # fmt: skip
    serve_load.plot(results, tmp_path / "latency.svg", "test")
    root = ElementTree.parse(tmp_path / "latency.svg").getroot()
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 6 and all(len(line.get("points").split()) == 3 for line in lines)
    labels = {text.text for text in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"1", "4", "16", "torch median", "onnx p99", "onnx-int8 median"} <= labels
    heights = [[float(point.split(",")[1]) for point in line.get("points").split()] for line in lines]
    assert all(first > last for first, *_, last in heights)  # latency rising with clients is drawn rising (SVG's y grows downward)
