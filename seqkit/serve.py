"""``seqkit serve``: a trained model as an HTTP JSON service, on Starlette and uvicorn.

Requests are read and checked on the event loop; the model runs in one worker thread
(torch computes synchronously and keeps its own intra-op threads), fed by a queue. The
worker takes every request waiting (up to ``Limits.max_batch`` texts) and, while other
requests are still being read, waits at most ``Limits.max_wait`` seconds for them; a
request alone never waits. It answers them all from one batched API call
(``Tagger.tag(texts)``, ``Classifier.predict(texts)``, ...) and hands each request its
part back on the loop, so the loop never waits on torch. A generation request has its own
settings and runs alone. Answers are what ``seqkit predict --format jsonl`` prints, made
by the same functions.
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import socket
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .api import Classifier, Generator, LanguageModel, Pretrained, Regressor, Seq2Seq, Tagger, _check_generation
from .cli import _format_doc, _format_prediction, _info_lines
from .errors import SeqkitError


@dataclass(frozen=True)
class Limits:
    """What one request may ask and how requests are batched (``seqkit serve --help``)."""

    max_batch: int = 32  # texts per model call
    max_wait: float = 0.005  # seconds a batch waits for requests still being read (none: no wait)
    max_body: int = 1_000_000  # bytes of a request body
    max_text: int = 10_000  # characters of a text, prompt or condition
    max_texts: int = 64  # texts of one request


# generation settings a request may give, and the most work one request may ask for: the
# API's own ranges (decoding.LIMITS) allow hours of it, which a shared service should not
GENERATION_SETTINGS = ("max_tokens", "temperature", "top_k", "top_p", "seed", "num", "beam", "no_repeat_ngram_size")
SERVICE_CAPS = {"max_tokens": 2_000, "num": 16, "beam": 10}
POLL = 0.0005  # seconds between the worker's looks at the queue while it waits for company
ROUTES = "GET /, GET /health, GET /info and POST /predict"


class BadRequest(Exception):
    """A request the service refuses: its status and the one-line message sent as ``{"error": ...}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    """One request waiting for the worker: its texts (a generation: the prompt or
    condition alone), its generation settings, and where its answer goes."""

    texts: list
    settings: dict[str, Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Batcher:
    """The queue and the one worker thread that runs the model; ``batches`` counts the
    model calls it made, ``requests`` and ``texts`` what they answered. ``arriving``
    counts the requests the event loop is still reading and checking: the worker waits
    for company only while there are some."""

    def __init__(self, model: Pretrained, limits: Limits):
        self.model, self.limits = model, limits
        self.generates = isinstance(model, (LanguageModel, Generator))
        self.queue: queue.Queue[Optional[_Job]] = queue.Queue()
        self.arriving = 0  # changed on the event loop only; the worker only reads it
        self.batches = self.requests = self.texts = 0
        self.thread = threading.Thread(target=self._work, name="seqkit-serve-model", daemon=True)

    def start(self) -> None:
        if isinstance(self.model, Tagger):  # the first decoding loads (or compiles) the CRF's loops: before serving, not in a request
            self.model.tag("warm up")
        self.thread.start()

    def stop(self) -> None:
        self.queue.put(None)  # the worker ends after the requests queued before it
        self.thread.join(timeout=10)

    @contextmanager
    def reading(self):
        """Around reading, checking and queueing one request: while it lasts, a batch
        being formed waits (at most ``max_wait``) for this request to join it."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    def submit(self, texts: list, settings: dict[str, Any]) -> asyncio.Future:
        """Queue ``texts``; the future is the JSON answer for each, once the worker has run them."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.put(_Job(texts, settings, future, loop))
        return future

    def _work(self) -> None:
        waiting: Optional[_Job] = None
        stopping = False
        while not stopping:
            first = waiting or self.queue.get()
            waiting = None
            if first is None:
                return
            jobs, count = [first], len(first.texts)
            deadline = time.monotonic() + self.limits.max_wait
            while not self.generates and count < self.limits.max_batch:
                try:
                    job = self.queue.get(timeout=POLL) if self._company_coming(deadline) else self.queue.get_nowait()
                except queue.Empty:
                    if self._company_coming(deadline):
                        continue
                    break
                if job is None:
                    stopping = True
                    break
                if count + len(job.texts) > self.limits.max_batch:
                    waiting = job  # it starts the next batch
                    break
                jobs.append(job)
                count += len(job.texts)
            self._answer(jobs)

    def _company_coming(self, deadline: float) -> bool:
        """Whether the batch should wait: requests are still being read, and there is time."""
        return self.arriving > 0 and time.monotonic() < deadline

    def _answer(self, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        try:
            answers = self._run(texts, jobs[0].settings)
        except Exception as error:  # noqa: BLE001 -- the service answers for its model; it never dies of one
            if len(jobs) > 1:  # one request failed the batch: answer each alone, so the others still get theirs
                for job in jobs:
                    self._answer([job])
                return
            jobs[0].loop.call_soon_threadsafe(_settle, jobs[0].future, None, error)
            return
        self.batches += 1
        self.requests += len(jobs)
        self.texts += len(texts)
        start = 0
        for job in jobs:
            job.loop.call_soon_threadsafe(_settle, job.future, answers[start : start + len(job.texts)], None)
            start += len(job.texts)

    def _run(self, texts: list, settings: dict[str, Any]) -> list[str]:
        """One batched API call: each text's answer as a line of JSON."""
        model, batch_size = self.model, self.limits.max_batch
        if isinstance(model, Tagger):
            return [_format_doc(doc, "jsonl") for doc in model.tag(texts, batch_size=batch_size)]
        if isinstance(model, (Classifier, Regressor)):
            return [_format_prediction(text, result, "jsonl") for text, result in zip(texts, model.predict(texts, batch_size=batch_size))]
        if isinstance(model, Seq2Seq):  # as seqkit predict --format jsonl writes it
            outputs = model.predict(texts, batch_size=batch_size)
            return [json.dumps({"text": text, "output": output}, ensure_ascii=False) for text, output in zip(texts, outputs)]
        (given,) = texts
        if isinstance(model, LanguageModel):
            result = model.generate(given, **settings)
            record = {"prompt": given, "texts" if "num" in settings else "text": result}
        else:
            renamed = {("max_length" if name == "max_tokens" else name): value for name, value in settings.items()}
            record = {"condition": given, "texts": model.generate(given, **renamed)}
        return [json.dumps(record, ensure_ascii=False)]


def _settle(future: asyncio.Future, result: Any, error: Optional[BaseException]) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading it, when the
    request says its length)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"the body has {int(declared):,} bytes; the limit is {limit:,} (--max-body)", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"the body is over {limit:,} bytes, the limit (--max-body)", 413)
    return bytes(body)


def _parse(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadRequest('an empty body: send a JSON object such as {"text": "..."}')
    try:
        payload = json.loads(body)
    except ValueError as error:  # JSONDecodeError, or bytes that are no UTF-8/16/32
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise BadRequest(f'expected a JSON object such as {{"text": "..."}}, not {_json_type(payload)}')
    return payload


def _json_type(value: Any) -> str:
    names = {str: "a string", bool: "true or false", int: "a number", float: "a number", list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_text(name: str, value: Any, limits: Limits) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, not {_json_type(value)}")
    if len(value) > limits.max_text:
        raise BadRequest(f"{name} has {len(value):,} characters; the limit is {limits.max_text:,} (--max-text)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:  # a JSON escape can hold half of an emoji
        raise BadRequest(f"{name} holds a lone surrogate at character {error.start}, which is not text") from None
    return value


def _check_fields(payload: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = [name for name in payload if name not in allowed]
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; this model takes {', '.join(repr(name) for name in allowed)}")


def _texts(payload: dict[str, Any], limits: Limits) -> tuple[bool, list[str]]:
    """``(single, texts)`` of a predict request: ``{"text": ...}`` or ``{"texts": [...]}``."""
    _check_fields(payload, ("text", "texts"))
    if ("text" in payload) == ("texts" in payload):
        raise BadRequest('give "text" (a string) or "texts" (a list of strings)' + (", not both" if payload else ""))
    if "text" in payload:
        return True, [_check_text('"text"', payload["text"], limits)]
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise BadRequest(f'"texts" must be a list of strings, not {_json_type(texts)}')
    if len(texts) > limits.max_texts:
        raise BadRequest(f'"texts" holds {len(texts):,} texts; the limit is {limits.max_texts:,} a request (--max-texts)')
    return False, [_check_text(f'"texts" item {index}', text, limits) for index, text in enumerate(texts)]


def _generation(payload: dict[str, Any], model: Pretrained, limits: Limits) -> tuple[Optional[str], dict[str, Any]]:
    """The prompt (a language model) or condition (a generator) and the settings of a
    generation request, checked as the API checks them, within ``SERVICE_CAPS``."""
    field = "prompt" if isinstance(model, LanguageModel) else "condition"
    settings_allowed = GENERATION_SETTINGS if isinstance(model, LanguageModel) else GENERATION_SETTINGS[:-1]
    _check_fields(payload, (field, *settings_allowed))
    given = payload.get(field, "" if field == "prompt" else None)
    if given is not None or field == "prompt":
        given = _check_text(f'"{field}"', given, limits)
    settings = {name: payload[name] for name in settings_allowed if payload.get(name) is not None}
    for name, cap in SERVICE_CAPS.items():
        value = settings.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            raise BadRequest(f"{name}: this service gives at most {cap:,}, not {value:,}")
    try:
        _check_generation(**{("max_length" if name == "max_tokens" and field == "condition" else name): value for name, value in settings.items()})
    except (TypeError, ValueError) as error:  # a generator's API calls max_tokens max_length; the service does not
        raise BadRequest(str(error).replace("max_length", "max_tokens")) from None
    if settings.get("beam") and settings.get("num", 1) > 1:
        raise BadRequest("beam search gives the single most likely text: leave num out")
    if field == "condition" and given is not None and given not in model.conditions:
        raise BadRequest(f"unknown condition {given!r}; this model knows {', '.join(map(repr, model.conditions)) or 'none (leave it out)'}")
    return given, settings


def describe(model: Pretrained, checkpoint: str) -> dict[str, Any]:
    """``seqkit info``'s rows as JSON: each line's name (spaces as ``_``) to its value."""
    rows = {}
    for line in _info_lines(checkpoint, model):
        name, value = line[:12].strip(), line[13:]
        rows[name.replace(" ", "_")] = value
    return rows


def build_app(model: Pretrained, checkpoint: str, limits: Limits = Limits()) -> Starlette:
    """The service as an ASGI app; its lifespan starts and stops the model's worker
    (``app.state.batcher``)."""
    if model.recipe.data.inputs == "vectors":
        raise SeqkitError(f"{checkpoint} reads vectors of numbers; seqkit serve takes text (use the Python API)")
    batcher = Batcher(model, limits)
    info = describe(model, checkpoint)
    limits_shown = {("max_wait_ms" if name == "max_wait" else name): value * 1000 if name == "max_wait" else value for name, value in asdict(limits).items()}
    conditions = json.dumps(getattr(model, "conditions", [])).replace("</", "<\\/")  # a condition cannot end the script
    page = _PAGE.replace("__TASK__", json.dumps(model.task)).replace("__CONDITIONS__", conditions)

    async def predict(request: Request) -> Response:
        try:
            with batcher.reading():
                payload = _parse(await _read_body(request, limits.max_body))
                if batcher.generates:
                    given, settings = _generation(payload, model, limits)
                    single, texts = True, [given]
                else:
                    (single, texts), settings = _texts(payload, limits), {}
                answered = batcher.submit(texts, settings) if texts else None
            answers = await answered if answered else []
        except BadRequest as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        except (TypeError, ValueError) as error:  # what the API refuses, naming it
            return JSONResponse({"error": str(error)}, status_code=400)
        except Exception as error:  # noqa: BLE001 -- the model failed; the service goes on
            return JSONResponse({"error": f"the model failed: {type(error).__name__}: {error}"}, status_code=500)
        return Response(answers[0] if single else "[" + ",".join(answers) + "]", media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def show_info(request: Request) -> Response:
        counts = {"batches": batcher.batches, "requests": batcher.requests, "texts": batcher.texts}
        return JSONResponse({**info, "service": {**counts, "limits": limits_shown}})

    async def home(request: Request) -> Response:
        return HTMLResponse(page)

    async def http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 404:
            message = f"no such path {request.url.path}; the service answers {ROUTES}"
        elif error.status_code == 405:
            allowed = sorted(set((error.headers or {}).get("Allow", "").split(", ")) - {"HEAD", ""})  # HEAD goes with GET, unsaid
            message = f"{request.method} is not allowed on {request.url.path}; use {' or '.join(allowed) or 'another method'}"
        else:
            message = str(error.detail)
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        batcher.start()
        yield
        batcher.stop()

    routes = [Route("/", home, methods=["GET"]), Route("/health", health, methods=["GET"]), Route("/info", show_info, methods=["GET"]),
              Route("/predict", predict, methods=["POST"])]  # fmt: skip
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.batcher = batcher
    return app


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free port), or a one-line error saying why not."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # no Nagle delay: uvicorn writes a response's headers and body apart, and on a kept-alive
        # connection the body then waited for the client's delayed ACK (44 ms a request, measured);
        # the accepted connections inherit it, since asyncio does not set it on a socket it is given
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until uvicorn serves them
    except OSError as error:
        raise SeqkitError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def run_server(model: Pretrained, checkpoint: str, host: str, port: int, limits: Limits = Limits(),
               report: Callable[[str], None] = print) -> None:  # fmt: skip
    """Serve ``model`` until Ctrl-C (which the CLI turns into one line and exit 130)."""
    import uvicorn

    app = build_app(model, checkpoint, limits)
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    report(f"seqkit: serving {model.task} model {checkpoint} on http://{shown}:{bound_port} (batches of up to {limits.max_batch} texts, "
           f"{limits.max_wait * 1000:g} ms wait); Ctrl-C stops")  # fmt: skip
    server = _server_class()(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    server.run(sockets=[sock])
    if signal.SIGINT in server.signals:
        raise KeyboardInterrupt  # after a clean shutdown: the CLI says so in one line and exits 130


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but a signal is only recorded (in ``signals``), not raised
        again once it has shut down: raised inside the event loop, it reaches the lifespan
        task, which logs it as a traceback."""

        signals: list[int]

        @contextmanager
        def capture_signals(self):
            self.signals = []
            if threading.current_thread() is not threading.main_thread():  # a server in a thread (tests) leaves signals alone
                yield
                return
            original = {sig: signal.signal(sig, self._record) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def _record(self, sig: int, frame: Any) -> None:
            self.signals.append(sig)
            self.handle_exit(sig, frame)

    return Server


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seqkit serve</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
textarea { width: 100%; min-height: 5rem; font: inherit; box-sizing: border-box; }
button { font: inherit; padding: .3rem 1.2rem; margin-top: .5rem; }
#result { margin-top: 1.2rem; white-space: pre-wrap; }
mark { background: #ffe08a; padding: 0 .15rem; border-radius: .2rem; }
mark small { color: #7a5b00; margin-left: .25rem; font-size: .7em; text-transform: uppercase; }
.error { color: #b00020; } .muted { color: #666; }
</style></head>
<body>
<h1>seqkit <span class="muted" id="task"></span></h1>
<form id="form"><textarea id="text" name="text" placeholder="Type a text"></textarea><br>
<button id="submit" type="submit">Run</button></form>
<div id="result"></div>
<script>
const TASK = __TASK__, CONDITIONS = __CONDITIONS__;
const names = {tagging: "tagger", classification: "classifier", regression: "regression", language_model: "language model",
               generation: "generator", seq2seq: "seq2seq"};
document.getElementById("task").textContent = names[TASK] || TASK;
const input = document.getElementById("text"), result = document.getElementById("result");
if (TASK === "language_model") input.placeholder = "A prompt to continue";
if (TASK === "generation") input.placeholder = "A condition" + (CONDITIONS.length ? " (" + CONDITIONS.join(", ") + ")" : " (none: leave empty)");
function el(tag, text, cls) { const node = document.createElement(tag); if (text !== undefined) node.textContent = text; if (cls) node.className = cls; return node; }
function show(answer) {
  result.replaceChildren();
  if (TASK === "tagging") {
    let cursor = 0;
    for (const span of answer.spans) {
      result.append(answer.text.slice(cursor, span.start));
      const mark = el("mark", span.text); mark.dataset.label = span.label;
      mark.title = span.label + (span.score == null ? "" : " " + span.score.toFixed(3));
      mark.append(el("small", span.label)); result.append(mark); cursor = span.end;
    }
    result.append(answer.text.slice(cursor));
    if (!answer.spans.length) result.append(el("div", answer.tokens.map((t, i) => t + "/" + answer.tags[i]).join(" "), "muted"));
  } else if (TASK === "classification") {
    const label = el("strong", answer.label); label.id = "label"; result.append(label, " " + answer.probabilities[answer.label].toFixed(4));
    const others = Object.entries(answer.probabilities).sort((a, b) => b[1] - a[1]).map(([k, v]) => k + " " + v.toFixed(4));
    result.append(el("div", others.join(", "), "muted"));
  } else if (TASK === "regression") {
    const value = answer.prediction;
    result.append(el("strong", typeof value === "number" ? String(+value.toPrecision(6)) : JSON.stringify(value)));
  } else if (TASK === "seq2seq") {
    result.append(el("strong", answer.output.join(" ")));
  } else {
    result.append(el("div", answer.text !== undefined ? answer.text : answer.texts.join("\\n")));
  }
}
document.getElementById("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = input.value;
  const body = TASK === "language_model" ? {prompt: text} : TASK === "generation" ? (text.trim() ? {condition: text.trim()} : {}) : {text: text};
  result.replaceChildren(el("span", "…", "muted"));
  try {
    const response = await fetch("/predict", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const answer = await response.json();
    if (!response.ok) { result.replaceChildren(el("span", answer.error, "error")); return; }
    show(answer);
  } catch (error) { result.replaceChildren(el("span", String(error), "error")); }
});
</script>
</body></html>
"""
