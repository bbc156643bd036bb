"""Backup figures, in one run: age encryption (pyrage, and the age binary through pipes) against the format it
replaced (sgbk: our AES-256-GCM STREAM), and the whole backup pipeline of each, with peak memory for a small and a
ten times larger input.

Run: ``.venv/bin/python bench/backup.py [--small-mib 200] [--large-mib 2048] [--dir /tmp]`` (from the repository
root; the age binary part needs Debian's ``age``). Part 1 encrypts and decrypts 256 MiB of random bytes in memory,
streamed in 1 MiB pieces as backups do: sgbk (the baseline; its writer now lives in the tests), pyrage through the
product's adapters (controllers/backup/encryption.py), and ``age`` fed through a pipe; interleaved, best of 3 after
a warm-up, ratios against sgbk. Part 2 generates text-like input files and, in a fresh process each, streams them
through each whole pipeline (read from a pipe as from pg_dump → archive → gzip at the default level → encryption →
SHA-256 → file → fsync) and back (decryption → gunzip → unpack, as verify does before pg_restore), printing
throughput and each process's peak RSS (VmHWM; for the age binary also the child's). Goals: the age pipeline no
worse than 0.8× sgbk's, and the same peak for both sizes. The files are deleted at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyrage import x25519

from singularity_ops.config import BackupConfig
from singularity_ops.controllers.backup import sgbk
from singularity_ops.controllers.backup.archive import ArchiveReader, ArchiveWriter
from singularity_ops.controllers.backup.encryption import decrypt, encrypt
from singularity_ops.controllers.backup.errors import BackupError
from tests.controllers.backup.sgbk_writer import ArchiveWriter as SgbkArchiveWriter
from tests.controllers.backup.sgbk_writer import EncryptingWriter

MIB = 1 << 20
LEGACY = sgbk.LegacyKey(bytes(range(32)))  # the bench's own fixed keys: nothing real is encrypted
IDENTITY = x25519.Identity.from_str("AGE-SECRET-KEY-10GWY989X5C8DSTYLNVQE5PF32W02592GA92MDFE3UPJ4LSSC72RS5XAW2K")
PUBLIC = str(IDENTITY.to_public())
LEVEL = BackupConfig().compression_level


class NullSink:
    def write(self, data: bytes | memoryview) -> int:
        return len(data)


class Hashing:
    """SHA-256 of what passes, as backups take of the encrypted file both ways (the pyrage adapters do it too)."""

    def __init__(self, file: Any = None) -> None:
        self.file, self.digest = file, hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        return len(data) if self.file is None else self.file.write(data)

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.digest.update(data)
        return data


def pieces(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), MIB):
        yield view[start:start + MIB]


def wrong_key() -> BackupError:
    return BackupError("the bench's key does not open it")


class AgeProcess:
    """The age binary with its stdout drained by a thread: ``write`` feeds stdin, ``close`` waits."""

    def __init__(self, args: list[str], out: Callable[[bytes], Any]) -> None:
        self.process = subprocess.Popen(["age", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.peak_mib = 0.0  # the age process's, sampled as its output arrives
        self._thread = threading.Thread(target=self._drain, args=(out,), daemon=True)
        self._thread.start()

    def _drain(self, out: Callable[[bytes], Any]) -> None:
        while block := self.process.stdout.read1(MIB):  # type: ignore[union-attr]
            out(block)
            self.peak_mib = max(self.peak_mib, peak_rss_mib(self.process.pid))

    def write(self, data: bytes | memoryview) -> int:
        return self.process.stdin.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self._thread.join()
        if self.process.wait() != 0:
            raise RuntimeError("age failed")


def cpu_seconds() -> float:
    """CPU time of this process and of its children that ended: on a shared machine, a measure that other
    processes' load does not stretch as it does wall time."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def key_file(folder: Path) -> Path:
    path = folder / "bench.key"
    path.write_text(f"{IDENTITY}\n")
    path.chmod(0o600)
    return path


def throughput(size: int, folder: Path, rounds: int = 3) -> None:
    data = os.urandom(size)
    have_binary = subprocess.run(["sh", "-c", "command -v age"], capture_output=True).returncode == 0
    key = key_file(folder)
    sealed_sgbk, sealed_age = io.BytesIO(), io.BytesIO()
    writer = EncryptingWriter(sealed_sgbk, LEGACY)  # warm-up, and the ciphertexts the decryptions read
    for piece in pieces(data):
        writer.write(piece)
    writer.close()
    encrypt(pieces(data), sealed_age, [IDENTITY.to_public()])

    def sgbk_enc() -> None:
        writer = EncryptingWriter(Hashing(), LEGACY)  # type: ignore[arg-type]
        for piece in pieces(data):
            writer.write(piece)
        writer.close()

    def sgbk_dec() -> None:
        for _ in sgbk.decrypt(Hashing(io.BytesIO(sealed_sgbk.getvalue())), LEGACY, "bench"):  # type: ignore[arg-type]
            pass

    def binary(args: list[str], source: bytes) -> None:
        age = AgeProcess(args, Hashing().write)
        for piece in pieces(source):
            age.write(piece)
        age.close()

    ways: dict[str, Callable[[], None]] = {
        "sgbk_enc": sgbk_enc, "sgbk_dec": sgbk_dec,
        "pyrage_enc": lambda: encrypt(pieces(data), NullSink(), [IDENTITY.to_public()]),  # type: ignore[arg-type]
        "pyrage_dec": lambda: decrypt(io.BytesIO(sealed_age.getvalue()), [IDENTITY], lambda _: None, "bench",
                                      wrong_key)}
    if have_binary:
        ways["binary_enc"] = lambda: binary(["-r", PUBLIC], data)
        ways["binary_dec"] = lambda: binary(["-d", "-i", str(key)], sealed_age.getvalue())
    wall: dict[str, list[float]] = {name: [] for name in ways}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            started, used = time.perf_counter(), cpu_seconds()
            way()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(cpu_seconds() - used)
    print(f"Part 1: {size // MIB} MiB in memory, 1 MiB pieces, best of {rounds}; GB/s of wall time, then per "
          "CPU-second (this process and the age process), ratios against sgbk on CPU time")
    for way, label in (("sgbk", "sgbk STREAM (baseline)"), ("pyrage", "age, pyrage (kept)"),
                       ("binary", "age, the age binary")):
        if f"{way}_enc" not in wall:
            print(f"  {label:24s} not measured: no age binary on PATH")
            continue
        line = f"  {label:24s}"
        for step in ("enc", "dec"):
            per_cpu = size / min(cpu[f"{way}_{step}"]) / 1e9
            ratio = min(cpu[f"sgbk_{step}"]) / min(cpu[f"{way}_{step}"])
            line += (f" {'encrypt' if step == 'enc' else 'decrypt'} {size / min(wall[f'{way}_{step}']) / 1e9:4.2f} / "
                     f"{per_cpu:4.2f} GB/s ({ratio:4.2f}x)")
        both = (min(cpu["sgbk_enc"]) + min(cpu["sgbk_dec"])) / (min(cpu[f"{way}_enc"]) + min(cpu[f"{way}_dec"]))
        print(f"{line}, both {both:4.2f}x")


def generate(path: Path, size: int) -> None:
    """Text like the history tables' dump: timestamps, model names, numbers, hex digests, prompt text."""
    rng = random.Random(6)
    models = ["llama3.2:3b", "qwen2.5-coder:1.5b", "phi4:14b", "mistral:7b"]
    words = ["the", "a", "disk", "backup", "alert", "model", "token", "prompt", "answer", "summary", "memory", "load",
             "request"]
    lines = []
    while sum(map(len, lines)) < 4 * MIB:
        lines.append(f"2025-06-{rng.randint(1, 30):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
                     f"{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}+00\t{rng.choice(models)}\t/api/chat\t200\t"
                     f"{rng.getrandbits(128):032x}\t{rng.randint(10, 4000)}\t{rng.randint(10, 900)}\t"
                     f"{rng.random() * 30:.3f}\t{' '.join(rng.choices(words, k=rng.randint(5, 30)))}\n")
    pool = "".join(lines).encode()
    with open(path, "wb") as file:
        written = 0
        while written < size:
            block = pool[:size - written]
            file.write(block)
            written += len(block)


def peak_rss_mib(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # the process has just ended
        pass
    return 0.0


def archive_stream(source: Any) -> Iterator[bytes]:
    archive = ArchiveWriter(LEVEL, time.time())
    yield from archive.dump(source)
    yield from archive.finish({"id": "bench", "contents": archive.members})


def child_backup(way: str, source: Path, target: Path) -> None:
    before = peak_rss_mib()
    started, used = time.perf_counter(), cpu_seconds()
    dump = subprocess.Popen(["cat", str(source)], stdout=subprocess.PIPE)
    child = [0.0]
    with open(target, "wb") as raw:
        if way == "sgbk":
            writer = EncryptingWriter(Hashing(raw), LEGACY)  # type: ignore[arg-type]
            archive = SgbkArchiveWriter(writer, LEVEL)
            archive.add("database.dump", dump.stdout, "pg_dump")  # type: ignore[arg-type]
            archive.finish({"id": "bench", "contents": archive.members})
            writer.close()
        elif way == "pyrage":
            encrypt(archive_stream(dump.stdout), raw, [IDENTITY.to_public()])
        else:
            age = AgeProcess(["-r", PUBLIC], Hashing(raw).write)
            for piece in archive_stream(dump.stdout):
                age.write(piece)
            age.close()
            child[0] = age.peak_mib
        raw.flush()
        os.fsync(raw.fileno())
    dump.wait()
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": cpu_seconds() - used, "peak_mib": peak_rss_mib(),
                      "start_mib": before, "child_mib": child[0], "out_bytes": target.stat().st_size}))


def child_read(way: str, target: Path) -> None:
    before = peak_rss_mib()
    started, used = time.perf_counter(), cpu_seconds()
    total = [0]
    child = [0.0]

    def count(event: str, value: Any) -> None:
        if event == "data":
            total[0] += len(value)

    with open(target, "rb") as raw:
        if way == "sgbk":
            source = Hashing(raw)
            for event, value in sgbk.read_archive(sgbk.decrypt(source, LEGACY, target.name), target.name):  # type: ignore[arg-type]
                count(event, value)
        else:
            reader = ArchiveReader(target.name, count)
            if way == "pyrage":
                decrypt(raw, [IDENTITY], reader.feed, target.name, wrong_key)
            else:
                age = AgeProcess(["-d", "-i", str(key_file(target.parent))], reader.feed)
                digest = hashlib.sha256()
                while block := raw.read(MIB):
                    digest.update(block)
                    age.write(block)
                age.close()
                child[0] = age.peak_mib
            reader.finish()
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": cpu_seconds() - used, "peak_mib": peak_rss_mib(),
                      "start_mib": before, "child_mib": child[0], "bytes": total[0]}))


def run_child(*args: str) -> dict:
    output = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True).stdout
    return json.loads(output)


def pipelines(small_mib: int, large_mib: int, directory: Path, ways: list[str]) -> None:
    print(f"Part 2: whole pipelines, a fresh process each, on a {small_mib} MiB and a {large_mib} MiB history-like "
          f"input (gzip level {LEVEL}); MiB/s of wall time / per CPU-second (with cat and age), ratios on CPU time")
    with tempfile.TemporaryDirectory(dir=directory, prefix="bench-backup-") as folder:
        results: dict[tuple[str, int], tuple[dict, dict]] = {}
        for mib in (small_mib, large_mib):
            source = Path(folder) / f"input-{mib}"
            generate(source, mib * MIB)
            for way in ways:
                target = Path(folder) / f"backup-{mib}.{way}"
                made = run_child("--child-backup", way, str(source), str(target))
                read = run_child("--child-read", way, str(target))
                assert read["bytes"] == mib * MIB, (way, read)
                results[(way, mib)] = (made, read)
                child = f", age process {made['child_mib']:.1f}/{read['child_mib']:.1f}" if way == "binary" else ""
                print(f"  {way:6s} {mib:5d} MiB: backup {mib / made['seconds']:4.0f} / {mib / made['cpu']:4.0f} MiB/s "
                      f"({made['out_bytes'] / (mib * MIB):.0%} of the input), peak RSS {made['peak_mib']:5.1f} MiB "
                      f"(after imports {made['start_mib']:.1f}); read back {mib / read['seconds']:4.0f} / "
                      f"{mib / read['cpu']:4.0f} MiB/s, peak RSS {read['peak_mib']:5.1f} MiB{child}")
                target.unlink()
            source.unlink()
        for way in ways:
            grow = [results[(way, large_mib)][i]["peak_mib"] - results[(way, small_mib)][i]["peak_mib"]
                    for i in (0, 1)]
            line = (f"  {way:6s} peak RSS {large_mib} vs {small_mib} MiB: backup {grow[0]:+.1f} MiB, read "
                    f"{grow[1]:+.1f} MiB (goal: flat)")
            if way != "sgbk":
                ratio = [results[("sgbk", large_mib)][i]["cpu"] / results[(way, large_mib)][i]["cpu"]
                         for i in (0, 1)]
                line += (f"; throughput against sgbk at {large_mib} MiB, per CPU-second: backup {ratio[0]:.2f}x (goal: "
                         f">= 0.8x), read back {ratio[1]:.2f}x")
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-mib", type=int, default=200)
    parser.add_argument("--large-mib", type=int, default=2048)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the inputs go")
    parser.add_argument("--child-backup", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child-read", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_backup:
        child_backup(args.child_backup[0], Path(args.child_backup[1]), Path(args.child_backup[2]))
    elif args.child_read:
        child_read(args.child_read[0], Path(args.child_read[1]))
    else:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-keys-") as folder:
            throughput(256 * MIB, Path(folder))
        have_binary = subprocess.run(["sh", "-c", "command -v age"], capture_output=True).returncode == 0
        pipelines(args.small_mib, args.large_mib, args.dir, ["sgbk", "pyrage", *(["binary"] if have_binary else [])])


if __name__ == "__main__":
    main()
