"""A catalogue of real Ollama library models, as the Ollama API describes them.

``digest`` is the *manifest* digest (what ``/api/tags`` and ``/api/ps`` report, the ID ``ollama list``
shows the first 12 hex of); ``blob_digest`` is the GGUF weights layer, the file the runner is started
with (``--model …/blobs/sha256-<blob_digest>``) and the ``FROM`` line of ``/api/show``'s Modelfile.
``size`` is the ``/api/tags`` size in bytes (the manifest's layers; the GGUF blob is all but a few KB).
``model_info`` holds the GGUF metadata ``/api/show`` returns (token arrays are ``null`` unless verbose).

Sources, per model, are noted where the model is defined. License texts are cut after their first lines.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

KV_BYTES_PER_ELEMENT = 2  # Ollama's default KV cache type is f16
GRAPH_BATCH = 512  # default num_batch


@dataclass(frozen=True)
class StandInModel:
    name: str
    size: int
    digest: str
    blob_digest: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str
    model_info: dict[str, Any]
    parameters: str = ""
    template: str = ""
    capabilities: list[str] = field(default_factory=lambda: ["completion"])
    license: str = ""
    format: str = "gguf"
    parent_model: str = ""

    @property
    def architecture(self) -> str:
        return str(self.model_info["general.architecture"])

    def arch_value(self, key: str, default: int = 0) -> int:
        """``<architecture>.<key>`` from model_info, e.g. ``arch_value("block_count")``."""
        return int(self.model_info.get(f"{self.architecture}.{key}", default))

    @property
    def context_length(self) -> int:
        """The context length the model was trained for (not what a runner loads it with)."""
        return self.arch_value("context_length")

    @property
    def embedding_length(self) -> int:
        return self.arch_value("embedding_length")

    def kv_cache_bytes(self, num_ctx: int) -> int:
        """K and V, per layer, per position, per KV head, at f16."""
        heads = self.arch_value("attention.head_count", 1)
        kv_heads = self.arch_value("attention.head_count_kv", heads)
        head_dim = self.arch_value("attention.key_length", self.embedding_length // heads)
        return 2 * self.arch_value("block_count") * num_ctx * kv_heads * head_dim * KV_BYTES_PER_ELEMENT

    def graph_bytes(self, num_ctx: int) -> int:
        """Compute-graph estimate, after the llama branch of Ollama's fs/ggml ``GraphSize``."""
        heads = self.arch_value("attention.head_count", 1)
        vocab = self.arch_value("vocab_size", 32000)
        embd = self.embedding_length
        return 4 * GRAPH_BATCH * max(1 + 4 * embd + num_ctx * (1 + heads), embd + vocab)

    def loaded_size(self, num_ctx: int) -> int:
        """A realistic ``/api/ps`` ``size``: weights + KV cache + compute graph."""
        return self.size + self.kv_cache_bytes(num_ctx) + self.graph_bytes(num_ctx)


def ollama_parameters(*pairs: tuple[str, str | int | float]) -> str:
    """The ``parameters`` text of ``/api/show``: Go's ``fmt.Sprintf("%-30s %#v", key, value)`` per line."""
    return "\n".join(f"{key:<30} {json.dumps(value, ensure_ascii=False)}" for key, value in pairs)


APACHE_2 = (
    "                                 Apache License\n                           Version 2.0, January 2004"
)

# Ollama's published llama3.2 template (llama3.1's differs only in its system preamble).
LLAMA3_TEMPLATE = """<|start_header_id|>system<|end_header_id|>

Cutting Knowledge Date: December 2023

{{ if .System }}{{ .System }}
{{- end }}
{{- if .Tools }}When you receive a tool call response, use the output to format an answer \
to the orginal user question.

You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

Given the following functions, please respond with a JSON for a function call with its proper arguments \
that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. \
Do not use variables.

{{ range $.Tools }}
{{- . }}
{{ end }}
{{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

LLAMA3_PARAMETERS = ollama_parameters(
    ("stop", "<|start_header_id|>"), ("stop", "<|end_header_id|>"), ("stop", "<|eot_id|>")
)

# Ollama's qwen2.5-coder template, abridged: the tool-calling instructions are shortened.
QWEN_CODER_TEMPLATE = """{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>
{{- else if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}{{ if and $last (ne .Role "assistant") }}<|im_end|>
<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""

# Ollama's mistral (v0.3) template.
MISTRAL_TEMPLATE = """{{- if .Messages }}
{{- range $index, $_ := .Messages }}
{{- if eq .Role "user" }}
{{- if and (eq (len (slice $.Messages $index)) 1) $.Tools }}[AVAILABLE_TOOLS] {{ $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ if and $.System (eq (len (slice $.Messages $index)) 1) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}
{{- else if .ToolCalls }}[TOOL_CALLS] [
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{- end }}]
{{- end }}</s>
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ .Content }}} [/TOOL_RESULTS]
{{- end }}
{{- end }}
{{- else }}[INST] {{ if .System }}{{ .System }}

{{ end }}{{ .Prompt }}[/INST]
{{- end }} {{ .Response }}
{{- if .Response }}</s>
{{- end }}"""

PHI4_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}<|im_sep|>
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_end|>
<|im_start|>assistant<|im_sep|>
{{ end }}
{{- end }}"""

TINYLLAMA_TEMPLATE = "<|system|>\n{{ .System }}</s>\n<|user|>\n{{ .Prompt }}</s>\n<|assistant|>\n"


def _gguf_tokenizer(model: str, pre: str | None, bos: int, eos: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "tokenizer.ggml.bos_token_id": bos,
        "tokenizer.ggml.eos_token_id": eos,
        "tokenizer.ggml.merges": None,
        "tokenizer.ggml.model": model,
        "tokenizer.ggml.token_type": None,
        "tokenizer.ggml.tokens": None,
    }
    if pre is not None:
        info["tokenizer.ggml.pre"] = pre
    return info


REAL_MODELS: dict[str, StandInModel] = {
    # Digest, size 2019393189 and blob: `ollama list` / /api/tags / runner logs of llama3.2:3b
    # (= llama3.2:latest). model_info: a captured /api/show of the same digest.
    "llama3.2:3b": StandInModel(
        name="llama3.2:3b",
        size=2019393189,
        digest="a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        blob_digest="dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff",
        family="llama",
        families=["llama"],
        parameter_size="3.2B",
        quantization_level="Q4_K_M",
        model_info={
            "general.architecture": "llama",
            "general.basename": "Llama-3.2",
            "general.file_type": 15,
            "general.finetune": "Instruct",
            "general.languages": ["en", "de", "fr", "it", "pt", "hi", "es", "th"],
            "general.parameter_count": 3212749888,
            "general.quantization_version": 2,
            "general.size_label": "3B",
            "general.tags": ["facebook", "meta", "pytorch", "llama", "llama-3", "text-generation"],
            "general.type": "model",
            "llama.attention.head_count": 24,
            "llama.attention.head_count_kv": 8,
            "llama.attention.key_length": 128,
            "llama.attention.layer_norm_rms_epsilon": 1e-05,
            "llama.attention.value_length": 128,
            "llama.block_count": 28,
            "llama.context_length": 131072,
            "llama.embedding_length": 3072,
            "llama.feed_forward_length": 8192,
            "llama.rope.dimension_count": 128,
            "llama.rope.freq_base": 500000,
            "llama.vocab_size": 128256,
            **_gguf_tokenizer("gpt2", "llama-bpe", 128000, 128009),
        },
        parameters=LLAMA3_PARAMETERS,
        template=LLAMA3_TEMPLATE,
        capabilities=["completion", "tools"],
        license="LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\nLlama 3.2 Version Release Date: September 25, 2024",
    ),
    # `ollama list` ID 6d3abb8d2d53 and "986 MB"; blob sha256-29d8c98f… of 986048576 bytes (listings of
    # the blobs directory). Only the 12-hex ID is published: the rest of `digest` is padding, and `size`
    # is the blob's bytes (the unpublished /api/tags total is a few KB more).
    # model_info: Qwen2.5-Coder-1.5B-Instruct config.json (hidden 1536, 28 layers, 12/2 heads, ffn 8960).
    "qwen2.5-coder:1.5b": StandInModel(
        name="qwen2.5-coder:1.5b",
        size=986048576,
        digest="6d3abb8d2d53" + hashlib.sha256(b"qwen2.5-coder:1.5b").hexdigest()[12:],
        blob_digest="29d8c98fa6b098e200069bfb88b9508dc3e85586d20cba59f8dda9a808165104",
        family="qwen2",
        families=["qwen2"],
        parameter_size="1.5B",
        quantization_level="Q4_K_M",
        model_info={
            "general.architecture": "qwen2",
            "general.basename": "Qwen2.5-Coder",
            "general.file_type": 15,
            "general.finetune": "Instruct",
            "general.parameter_count": 1543714304,
            "general.quantization_version": 2,
            "general.size_label": "1.5B",
            "general.type": "model",
            "qwen2.attention.head_count": 12,
            "qwen2.attention.head_count_kv": 2,
            "qwen2.attention.layer_norm_rms_epsilon": 1e-06,
            "qwen2.block_count": 28,
            "qwen2.context_length": 32768,
            "qwen2.embedding_length": 1536,
            "qwen2.feed_forward_length": 8960,
            "qwen2.rope.freq_base": 1000000,
            "qwen2.vocab_size": 151936,
            **_gguf_tokenizer("gpt2", "qwen2", 151643, 151645),
        },
        template=QWEN_CODER_TEMPLATE,
        capabilities=["completion", "tools", "insert"],
        license=APACHE_2,
    ),
    # /api/tags of tinyllama:latest (= tinyllama:1.1b): size 637700138, digest 2644915e…, "1B" Q4_0;
    # blob 2af3b818… (FROM line of Modelfiles built on it). model_info: TinyLlama-1.1B-Chat-v1.0 config.json.
    "tinyllama:1.1b": StandInModel(
        name="tinyllama:1.1b",
        size=637700138,
        digest="2644915ede352ea7bdfaff0bfac0be74c719d5d5202acb63a6fb095b52f394a4",
        blob_digest="2af3b81862c6be03c769683af18efdadb2c33f60ff32ab6f83e42c043d6c7816",
        family="llama",
        families=["llama"],
        parameter_size="1B",
        quantization_level="Q4_0",
        model_info={
            "general.architecture": "llama",
            "general.file_type": 2,
            "general.parameter_count": 1100048384,
            "general.quantization_version": 2,
            "llama.attention.head_count": 32,
            "llama.attention.head_count_kv": 4,
            "llama.attention.layer_norm_rms_epsilon": 1e-05,
            "llama.block_count": 22,
            "llama.context_length": 2048,
            "llama.embedding_length": 2048,
            "llama.feed_forward_length": 5632,
            "llama.rope.dimension_count": 64,
            "llama.rope.freq_base": 10000,
            **_gguf_tokenizer("llama", None, 1, 2),
        },
        parameters=ollama_parameters(
            ("stop", "<|system|>"), ("stop", "<|user|>"), ("stop", "<|assistant|>"), ("stop", "</s>")
        ),
        template=TINYLLAMA_TEMPLATE,
        capabilities=["completion"],
        license=APACHE_2,
    ),
    # /api/tags of phi4:14b (= phi4:latest): size 9053116391, digest ac896e5b…, phi3 family, 14.7B Q4_K_M;
    # blob fd7b6731… (9053114464 bytes per its manifest). model_info: microsoft/phi-4 config.json.
    "phi4:14b": StandInModel(
        name="phi4:14b",
        size=9053116391,
        digest="ac896e5b8b34a1f4efa7b14d7520725140d5512484457fab45d2a4ea14c69dba",
        blob_digest="fd7b6731c33c57f61767612f56517460ec2d1e2e5a3f0163e0eb3d8d8cb5df20",
        family="phi3",
        families=["phi3"],
        parameter_size="14.7B",
        quantization_level="Q4_K_M",
        model_info={
            "general.architecture": "phi3",
            "general.file_type": 15,
            "general.parameter_count": 14659507200,
            "general.quantization_version": 2,
            "phi3.attention.head_count": 40,
            "phi3.attention.head_count_kv": 10,
            "phi3.attention.layer_norm_rms_epsilon": 1e-05,
            "phi3.block_count": 40,
            "phi3.context_length": 16384,
            "phi3.embedding_length": 5120,
            "phi3.feed_forward_length": 17920,
            "phi3.rope.dimension_count": 128,
            "phi3.rope.freq_base": 250000,
            "phi3.vocab_size": 100352,
            **_gguf_tokenizer("gpt2", "dbrx", 100257, 100265),
        },
        parameters=ollama_parameters(
            ("stop", "<|im_start|>"), ("stop", "<|im_end|>"), ("stop", "<|im_sep|>")
        ),
        template=PHI4_TEMPLATE,
        capabilities=["completion"],
        license="Microsoft.\nCopyright (c) Microsoft Corporation.\n\nMIT License",
    ),
    # /api/tags of mistral:7b (= mistral:latest, v0.3): size 4113301824, digest f974a743…, 7.2B Q4_0;
    # blob ff82381e… (runner logs). model_info: Mistral-7B-Instruct-v0.3 config.json.
    "mistral:7b": StandInModel(
        name="mistral:7b",
        size=4113301824,
        digest="f974a74358d62a017b37c6f424fcdf2744ca02926c4f952513ddf474b2fa5091",
        blob_digest="ff82381e2bea77d91c1b824c7afb83f6fb73e9f7de9dda631bcdbca564aa5435",
        family="llama",
        families=["llama"],
        parameter_size="7.2B",
        quantization_level="Q4_0",
        model_info={
            "general.architecture": "llama",
            "general.file_type": 2,
            "general.parameter_count": 7248023552,
            "general.quantization_version": 2,
            "llama.attention.head_count": 32,
            "llama.attention.head_count_kv": 8,
            "llama.attention.layer_norm_rms_epsilon": 1e-05,
            "llama.block_count": 32,
            "llama.context_length": 32768,
            "llama.embedding_length": 4096,
            "llama.feed_forward_length": 14336,
            "llama.rope.dimension_count": 128,
            "llama.rope.freq_base": 1000000,
            "llama.vocab_size": 32768,
            **_gguf_tokenizer("llama", None, 1, 2),
        },
        parameters=ollama_parameters(("stop", "[INST]"), ("stop", "[/INST]")),
        template=MISTRAL_TEMPLATE,
        capabilities=["completion", "tools"],
        license=APACHE_2,
    ),
    # /api/tags of llama3.1:8b (= llama3.1:latest): size 4920753328, digest 46e0c10c…, 8.0B Q4_K_M;
    # blob 667b0c19…. model_info: the llama3 8B /api/show example of docs/api.md, at 131072 context.
    "llama3.1:8b": StandInModel(
        name="llama3.1:8b",
        size=4920753328,
        digest="46e0c10c039e019119339687c3c1757cc81b9da49709a3b3924863ba87ca666e",
        blob_digest="667b0c1932bc6ffc593ed1d03f895bf2dc8dc6df21db3042284a6f4416b06a29",
        family="llama",
        families=["llama"],
        parameter_size="8.0B",
        quantization_level="Q4_K_M",
        model_info={
            "general.architecture": "llama",
            "general.basename": "Meta-Llama-3.1",
            "general.file_type": 15,
            "general.finetune": "Instruct",
            "general.parameter_count": 8030261248,
            "general.quantization_version": 2,
            "general.size_label": "8B",
            "llama.attention.head_count": 32,
            "llama.attention.head_count_kv": 8,
            "llama.attention.layer_norm_rms_epsilon": 1e-05,
            "llama.block_count": 32,
            "llama.context_length": 131072,
            "llama.embedding_length": 4096,
            "llama.feed_forward_length": 14336,
            "llama.rope.dimension_count": 128,
            "llama.rope.freq_base": 500000,
            "llama.vocab_size": 128256,
            **_gguf_tokenizer("gpt2", "llama-bpe", 128000, 128009),
        },
        parameters=LLAMA3_PARAMETERS,
        template=LLAMA3_TEMPLATE,
        capabilities=["completion", "tools"],
        license="LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\nLlama 3.1 Version Release Date: July 23, 2024",
    ),
    # /api/tags of nomic-embed-text:latest: size 274302450, digest 0a109f42…, nomic-bert 137M F16;
    # blob 970aa74c… (runner logs). model_info: nomic-embed-text-v1.5 config (12 layers, 768, ctx 2048).
    "nomic-embed-text:latest": StandInModel(
        name="nomic-embed-text:latest",
        size=274302450,
        digest="0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
        blob_digest="970aa74c0a90ef7482477cf803618e776e173c007bf957f635f1015bfcfef0e6",
        family="nomic-bert",
        families=["nomic-bert"],
        parameter_size="137M",
        quantization_level="F16",
        model_info={
            "general.architecture": "nomic-bert",
            "general.file_type": 1,
            "general.parameter_count": 136727040,
            "general.quantization_version": 2,
            "nomic-bert.attention.causal": False,
            "nomic-bert.attention.head_count": 12,
            "nomic-bert.attention.layer_norm_epsilon": 1e-12,
            "nomic-bert.block_count": 12,
            "nomic-bert.context_length": 2048,
            "nomic-bert.embedding_length": 768,
            "nomic-bert.feed_forward_length": 3072,
            "nomic-bert.pooling_type": 1,
            "nomic-bert.rope.freq_base": 1000,
            **_gguf_tokenizer("bert", None, 101, 102),
        },
        parameters=ollama_parameters(("num_ctx", 8192)),
        template="{{ .Prompt }}",
        capabilities=["embedding"],
        license=APACHE_2,
    ),
}


def synthetic_models(n: int) -> list[StandInModel]:
    """``n`` distinct installed models for benchmarks: real shapes under new names and digests."""
    shapes = list(REAL_MODELS.values())
    result = []
    for index in range(n):
        shape = shapes[index % len(shapes)]
        base, tag = shape.name.split(":")
        name = f"{base}-bench{index:03d}:{tag}"
        result.append(
            replace(
                shape,
                name=name,
                digest=hashlib.sha256(f"manifest:{name}".encode()).hexdigest(),
                blob_digest=hashlib.sha256(f"blob:{name}".encode()).hexdigest(),
            )
        )
    return result
