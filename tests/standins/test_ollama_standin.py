"""The stand-ins speak Ollama: proved with the official ``ollama`` client, raw HTTP and psutil."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import ollama
import psutil
import pytest

from .fake_runner import LEGACY_BINARY, fake_runner, start_fake_runner
from .models import REAL_MODELS, synthetic_models
from .ollama import OllamaStandIn

LLAMA = "llama3.2:3b"
EMBEDDER = "nomic-embed-text:latest"
GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?(Z|[+-]\d\d:\d\d)$")


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models=list(REAL_MODELS.values())) as server:
        yield server


@pytest.fixture
def client(standin: OllamaStandIn) -> Iterator[ollama.Client]:
    with ollama.Client(host=standin.url) as official:
        yield official


def post(
    standin: OllamaStandIn, path: str, body: object = None, content: bytes | None = None
) -> httpx.Response:
    return httpx.post(standin.url + path, json=body, content=content, timeout=5)


# --- catalogue ----------------------------------------------------------------------------------


def test_the_catalogue_holds_real_shapes() -> None:
    for model in REAL_MODELS.values():
        arch = model.architecture
        assert re.fullmatch(r"[0-9a-f]{64}", model.digest) and re.fullmatch(
            r"[0-9a-f]{64}", model.blob_digest
        )
        assert model.model_info["general.parameter_count"] > 10**8
        for key in ("block_count", "context_length", "embedding_length", "attention.head_count"):
            assert model.model_info[f"{arch}.{key}"] > 0
    assert REAL_MODELS["phi4:14b"].size == 9053116391
    assert REAL_MODELS[LLAMA].kv_cache_bytes(4096) == 2 * 28 * 4096 * 8 * 128 * 2


def test_synthetic_models_are_distinct() -> None:
    models = synthetic_models(50)
    assert (
        len({m.name for m in models})
        == len({m.digest for m in models})
        == len({m.blob_digest for m in models})
        == 50
    )


# --- listing --------------------------------------------------------------------------------------


def test_root_and_version(standin: OllamaStandIn) -> None:
    root = httpx.get(standin.url)
    assert (root.text, root.headers["content-type"]) == ("Ollama is running", "text/plain; charset=utf-8")
    assert httpx.get(standin.url + "/api/version").json() == {"version": "0.12.6"}
    assert httpx.head(standin.url + "/api/version").status_code == 200
    assert standin.host == standin.url.removeprefix("http://")


def test_list_reports_installed_models(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    assert set(models) == set(REAL_MODELS)
    llama = models[LLAMA]
    assert (llama.size, llama.digest) == (2019393189, REAL_MODELS[LLAMA].digest)
    assert llama.details.family == "llama" and llama.details.quantization_level == "Q4_K_M"
    assert llama.modified_at is not None and llama.modified_at.tzinfo is not None


def test_tags_are_json_as_go_writes_it(standin: OllamaStandIn) -> None:
    reply = httpx.get(standin.url + "/api/tags")
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert "server" not in reply.headers
    first = reply.json()["models"][0]
    assert list(first) == ["name", "model", "modified_at", "size", "digest", "details"]
    assert GO_TIME.match(first["modified_at"])
    assert reply.text.startswith('{"models":[{"name":')


def test_ps_shows_what_is_loaded(standin: OllamaStandIn, client: ollama.Client) -> None:
    assert client.ps().models == []
    standin.load(LLAMA)
    (running,) = client.ps().models
    assert running.model == LLAMA and running.digest == REAL_MODELS[LLAMA].digest
    assert (
        running.size > REAL_MODELS[LLAMA].size and running.size_vram == 0 and running.context_length == 4096
    )
    assert running.expires_at is not None
    assert timedelta(minutes=4) < running.expires_at - datetime.now(UTC) <= timedelta(minutes=5)
    standin.unload(LLAMA)
    assert client.ps().models == []


def test_ps_fields_and_explicit_sizes(standin: OllamaStandIn) -> None:
    standin.load("phi4:14b", size=11 * 10**9, size_vram=10 * 10**9, expires_in=None, context_length=8192)
    (entry,) = httpx.get(standin.url + "/api/ps").json()["models"]
    fields = ["name", "model", "size", "digest", "details", "expires_at", "size_vram", "context_length"]
    assert list(entry) == fields
    assert (entry["size"], entry["size_vram"], entry["context_length"]) == (11 * 10**9, 10 * 10**9, 8192)
    assert int(entry["expires_at"][:4]) > 2300  # keep_alive -1: Go's now + MaxInt64


def test_times_carry_the_server_zone() -> None:
    with OllamaStandIn(models=[REAL_MODELS[LLAMA]], tz=timezone(timedelta(hours=-7))) as standin:
        standin.load(LLAMA)
        expires = httpx.get(standin.url + "/api/ps").json()["models"][0]["expires_at"]
        created = post(standin, "/api/generate", {"model": LLAMA, "prompt": "hi", "stream": False}).json()
    assert expires.endswith("-07:00") and GO_TIME.match(expires)
    assert created["created_at"].endswith("Z") and GO_TIME.match(created["created_at"])


# --- show -----------------------------------------------------------------------------------------


def test_show_describes_the_model(standin: OllamaStandIn, client: ollama.Client) -> None:
    shown = client.show(LLAMA)
    assert shown.modelfile is not None and shown.modelinfo is not None
    lines = shown.modelfile.splitlines()
    assert lines[2] == f"# FROM {LLAMA}"
    assert f"FROM /root/.ollama/models/blobs/sha256-{REAL_MODELS[LLAMA].blob_digest}" in lines
    assert "PARAMETER stop <|eot_id|>" in lines
    assert (
        shown.modelinfo["llama.block_count"] == 28
        and shown.modelinfo["general.parameter_count"] == 3212749888
    )
    assert shown.capabilities == ["completion", "tools"]
    assert shown.parameters is not None and 'stop                           "<|eot_id|>"' in shown.parameters
    assert standin.blob_path(LLAMA) == f"/root/.ollama/models/blobs/sha256-{REAL_MODELS[LLAMA].blob_digest}"


def test_show_accepts_the_old_name_field_and_escapes_like_go(standin: OllamaStandIn) -> None:
    reply = post(standin, "/api/show", {"name": LLAMA})
    assert reply.status_code == 200
    assert "\\u003c|eot_id|\\u003e" in reply.text
    keys = list(reply.json()["model_info"])
    assert keys == sorted(keys)


# --- generate and chat ------------------------------------------------------------------------------


def test_generate_without_streaming(client: ollama.Client) -> None:
    reply = client.generate(LLAMA, "Why is the sky blue?", stream=False)
    assert reply.response == "The sky is blue because of Rayleigh scattering."
    assert reply.done and reply.done_reason == "stop"
    assert reply.eval_count == 8 and reply.prompt_eval_count == 5
    assert all(isinstance(d, int) and d > 0 for d in (reply.total_duration, reply.eval_duration))


def test_generate_streams_ndjson(standin: OllamaStandIn) -> None:
    with httpx.stream("POST", standin.url + "/api/generate", json={"model": LLAMA, "prompt": "hi"}) as reply:
        assert reply.headers["content-type"] == "application/x-ndjson"
        chunks = [json.loads(line) for line in reply.iter_lines()]
    assert [c["done"] for c in chunks] == [False] * 8 + [True]
    assert list(chunks[0]) == ["model", "created_at", "response", "done"]
    final = chunks[-1]
    assert final["response"] == "" and final["done_reason"] == "stop" and final["eval_count"] == 8
    assert len(final["context"]) == final["prompt_eval_count"] + final["eval_count"]


def test_generate_stream_with_the_client(client: ollama.Client) -> None:
    chunks = list(client.generate(LLAMA, "hi", stream=True))
    assert "".join(c.response for c in chunks) == "The sky is blue because of Rayleigh scattering."
    assert chunks[-1].done and chunks[-1].total_duration


def test_num_predict_caps_the_reply(client: ollama.Client) -> None:
    reply = client.generate(LLAMA, "hi", options={"num_predict": 20})
    assert reply.eval_count == 20 and reply.done_reason == "length"


def test_durations_are_nanoseconds_of_real_time(standin: OllamaStandIn, client: ollama.Client) -> None:
    standin.token_delay = 0.02
    began = time.monotonic_ns()
    reply = client.generate(LLAMA, "hi", stream=False)
    wall = time.monotonic_ns() - began
    assert reply.total_duration is not None and reply.eval_duration is not None
    assert 8 * 0.02e9 <= reply.eval_duration < reply.total_duration <= wall
    assert reply.prompt_eval_duration is not None and reply.prompt_eval_duration >= 0.02e9


def test_chat_streams_messages(client: ollama.Client) -> None:
    chunks = list(
        client.chat(LLAMA, messages=[{"role": "user", "content": "Why is the sky blue?"}], stream=True)
    )
    assert all(c.message.role == "assistant" for c in chunks)
    assert "".join(c.message.content or "" for c in chunks).startswith("The sky is blue")
    assert chunks[-1].done_reason == "stop" and chunks[-1].eval_count == 8


def test_empty_requests_load_and_keep_alive_zero_unloads(client: ollama.Client) -> None:
    assert client.generate(LLAMA, "").done_reason == "load"
    assert [m.model for m in client.ps().models] == [LLAMA]
    assert client.generate(LLAMA, "", keep_alive=0).done_reason == "unload"
    assert client.ps().models == []
    assert client.chat("mistral:7b", messages=[]).done_reason == "load"
    assert client.chat("mistral:7b", messages=[], keep_alive=0).done_reason == "unload"
    assert client.ps().models == []


def test_keep_alive_sets_the_expiry(client: ollama.Client) -> None:
    client.generate(LLAMA, "hi", keep_alive="1h")
    (entry,) = client.ps().models
    assert entry.expires_at is not None
    assert timedelta(minutes=59) < entry.expires_at - datetime.now(UTC) <= timedelta(hours=1)
    client.generate(LLAMA, "hi", keep_alive=0)
    assert client.ps().models == []


def test_unknown_models_get_ollamas_errors(client: ollama.Client) -> None:
    for call in (lambda: client.generate("nope:1b", "hi"), lambda: client.show("nope:1b")):
        with pytest.raises(ollama.ResponseError) as error:
            call()
        assert (error.value.error, error.value.status_code) == ("model 'nope:1b' not found", 404)
    with pytest.raises(ollama.ResponseError) as error:
        client.embed("nope:1b", "hi")
    assert error.value.error == 'model "nope:1b" not found, try pulling it first'


def test_capabilities_are_enforced(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as error:
        client.generate(EMBEDDER, "hi")
    assert (error.value.error, error.value.status_code) == (f'"{EMBEDDER}" does not support generate', 400)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(ollama.ResponseError) as error:
        client.chat("tinyllama:1.1b", messages=[{"role": "user", "content": "hi"}], tools=[tool])
    assert error.value.error == "registry.ollama.ai/library/tinyllama:1.1b does not support tools"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "missing request body"),
        (b'{"model": "llama3.2:3b"', "unexpected EOF"),
        (b"model=llama3.2", "invalid character 'm' looking for beginning of value"),
        (
            b'{"model": 5}',
            "json: cannot unmarshal number into Go struct field GenerateRequest.model of type string",
        ),
        (b'{"model": "llama3.2:3b", "keep_alive": "300"}', 'time: missing unit in duration "300"'),
    ],
)
def test_malformed_requests_get_gos_errors(standin: OllamaStandIn, body: bytes, message: str) -> None:
    reply = post(standin, "/api/generate", content=body)
    assert (reply.status_code, reply.json()) == (400, {"error": message})


def test_embed_returns_unit_vectors(client: ollama.Client) -> None:
    reply = client.embed(EMBEDDER, ["first text", "second"])
    assert len(reply.embeddings) == 2 and all(len(v) == 768 for v in reply.embeddings)
    assert abs(sum(x * x for x in reply.embeddings[0]) - 1) < 1e-4
    assert reply.embeddings[0] == client.embed(EMBEDDER, "first text").embeddings[0]
    assert reply.prompt_eval_count == 3


def test_async_clients_work_too(standin: OllamaStandIn) -> None:
    async def scenario() -> list[str]:
        async with ollama.AsyncClient(host=standin.url) as client:
            replies = await asyncio.gather(*(client.generate(LLAMA, f"q{i}") for i in range(4)))
        return [r.response for r in replies]

    assert len(set(asyncio.run(scenario()))) == 1


# --- OpenAI compatibility ----------------------------------------------------------------------------


def test_openai_models(standin: OllamaStandIn) -> None:
    reply = httpx.get(standin.url + "/v1/models")
    assert reply.headers["content-type"] == "application/json" and reply.text.endswith("}\n")
    entry = reply.json()["data"][0]
    assert entry["object"] == "model" and entry["owned_by"] == "library" and isinstance(entry["created"], int)


def test_openai_chat_without_streaming(standin: OllamaStandIn) -> None:
    body = {"model": LLAMA, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 4}
    reply = post(standin, "/v1/chat/completions", body).json()
    assert reply["object"] == "chat.completion" and reply["system_fingerprint"] == "fp_ollama"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_chat_streams_sse(standin: OllamaStandIn, include_usage: bool) -> None:
    body = {"model": LLAMA, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body["stream_options"] = {"include_usage": include_usage}
    with httpx.stream("POST", standin.url + "/v1/chat/completions", json=body) as reply:
        assert reply.headers["content-type"] == "text/event-stream"
        events = [line.removeprefix("data: ") for line in reply.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    with_usage = [c for c in chunks if "usage" in c]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None] * 8 + ["stop"]
    assert [c["usage"]["completion_tokens"] for c in with_usage] == ([8] if include_usage else [])


def test_openai_errors_have_openais_shape(standin: OllamaStandIn) -> None:
    missing = post(
        standin, "/v1/chat/completions", {"model": "nope:1b", "messages": [{"role": "user", "content": "x"}]}
    )
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "message": "model 'nope:1b' not found",
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }
    empty = post(standin, "/v1/chat/completions", {"model": LLAMA, "messages": []})
    assert (empty.status_code, empty.json()["error"]["message"]) == (400, "[] is too short - 'messages'")


# --- faults ----------------------------------------------------------------------------------------


def test_garbage_is_a_200_that_is_not_json(standin: OllamaStandIn, client: ollama.Client) -> None:
    standin.fault = "garbage"
    reply = httpx.get(standin.url + "/api/tags")
    assert reply.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        reply.json()
    with pytest.raises(json.JSONDecodeError):
        client.list()


def test_error500_is_an_ollama_error(standin: OllamaStandIn, client: ollama.Client) -> None:
    standin.fault = "error500"
    with pytest.raises(ollama.ResponseError) as error:
        client.ps()
    assert error.value.status_code == 500 and "llama runner" in error.value.error


def test_hang_outlasts_the_clients_timeout(standin: OllamaStandIn) -> None:
    standin.fault, standin.hang_seconds = "hang", 5
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(standin.url + "/api/ps", timeout=0.2)


def test_reset_drops_the_connection(standin: OllamaStandIn) -> None:
    standin.fault = "reset"
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(standin.url + "/api/tags")
    lines: list[str] = []
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):  # noqa: SIM117
        with httpx.stream(
            "POST", standin.url + "/api/generate", json={"model": LLAMA, "prompt": "hi"}
        ) as reply:
            lines.extend(reply.iter_lines())
    assert 0 < len(lines) <= 2


def test_faults_by_path_and_call_counts(standin: OllamaStandIn, client: ollama.Client) -> None:
    standin.faults_by_path = {"/api/ps": "error500"}
    assert len(client.list().models) == len(REAL_MODELS)
    with pytest.raises(ollama.ResponseError):
        client.ps()
    client.list()
    assert standin.calls["/api/tags"] == 2 and standin.calls["/api/ps"] == 1


def test_unknown_paths_answer_like_gin(standin: OllamaStandIn) -> None:
    assert (
        httpx.get(standin.url + "/api/nothing").text,
        httpx.get(standin.url + "/api/show").status_code,
    ) == (
        "404 page not found",
        405,
    )


# --- the runner processes ---------------------------------------------------------------------------


def test_fake_runner_looks_like_ollamas_runner(standin: OllamaStandIn) -> None:
    blob = standin.blob_path(LLAMA)
    with fake_runner(blob, rss_bytes=64 * 2**20, port=40123) as runner:
        process = psutil.Process(runner.pid)
        assert process.cmdline() == ["/usr/local/bin/ollama", "runner", "--model", blob, "--port", "40123"]
        assert process.name() == "ollama"
        assert process.memory_info().rss >= 64 * 2**20
    assert runner.returncode == 0  # SIGTERM is a clean exit


def test_fake_runner_legacy_binary() -> None:
    with fake_runner(
        "/root/.ollama/models/blobs/sha256-" + "a" * 64, rss_bytes=8 * 2**20, binary=LEGACY_BINARY
    ) as runner:
        cmdline = psutil.Process(runner.pid).cmdline()
        assert cmdline[:3] == [LEGACY_BINARY, "--model", "/root/.ollama/models/blobs/sha256-" + "a" * 64]
        assert cmdline[-2] == "--port" and psutil.Process(runner.pid).name() == "ollama_llama_server"


def test_fake_runner_exits_when_its_parent_dies() -> None:
    here = str(Path(__file__).resolve().parents[1])
    code = (
        f"import sys, time; sys.path.insert(0, {here!r}); "
        "from standins.fake_runner import start_fake_runner; "
        "print(start_fake_runner('/b/sha256-' + 'c' * 64, rss_bytes=2**20).pid, flush=True); time.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    runner = psutil.Process(int(parent.stdout.readline()))
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and runner.is_running() and runner.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.05)
    assert not runner.is_running() or runner.status() == psutil.STATUS_ZOMBIE
    parent.stdout.close()


def test_start_fake_runner_returns_a_popen() -> None:
    runner = start_fake_runner("/b/sha256-" + "e" * 64, rss_bytes=2**20)
    try:
        assert runner.poll() is None
    finally:
        runner.terminate()
        runner.wait(5)
        for stream in (runner.stdout, runner.stderr):
            if stream is not None:
                stream.close()
