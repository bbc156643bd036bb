"""Runner processes are recognised by Ollama's real command-line shapes, and nothing else."""

import pytest

from singularity_ops.runners import blob_key, runner_blob

BLOB = "/root/.ollama/models/blobs/sha256-dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff"


@pytest.mark.parametrize("cmdline", [
    # 0.5–0.11: all options on the command line (issue #9457)
    ["/usr/local/bin/ollama", "runner", "--model", BLOB, "--ctx-size", "16384", "--batch-size", "512",
     "--threads", "2", "--no-mmap", "--parallel", "1", "--port", "33301"],
    # the new engine
    ["ollama", "runner", "--ollama-engine", "--model", BLOB, "--port", "35253"],
    # 0.2–0.4: a separate runner binary
    ["/tmp/ollama3812/runners/cpu_avx2/ollama_llama_server", "--model", BLOB, "--ctx-size", "2048",
     "--port", "39905"],
    ["/usr/bin/ollama", "runner", f"--model={BLOB}", "--port", "1"],
])
def test_recognises_ollama_runner_command_lines(cmdline: list[str]) -> None:
    assert runner_blob(cmdline) == BLOB


@pytest.mark.parametrize("cmdline", [
    ["/usr/local/bin/ollama", "serve"],
    ["ollama", "run", "llama3.2"],
    ["python3", "train.py", "--model", BLOB],
    ["vim", "runner", "--model", BLOB],
    [],
])
def test_ignores_everything_else(cmdline: list[str]) -> None:
    assert runner_blob(cmdline) is None


def test_blobs_match_by_file_name_across_mount_points() -> None:
    assert blob_key(BLOB) == blob_key("/var/lib/ollama/models/blobs/" + BLOB.rsplit("/", 1)[1])
    assert blob_key("C:\\Users\\me\\.ollama\\models\\blobs\\sha256-ab") == "sha256-ab"
