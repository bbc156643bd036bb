"""Backup figures, in one run: the encrypted format's speed against a single-shot AES-GCM of the same bytes, and
peak memory while backing up a small and a ten times larger input.

Run: ``.venv/bin/python bench/backup.py [--small-mib 200] [--large-mib 2048] [--dir /tmp]`` (from the repository
root). Part 1 encrypts and decrypts 256 MiB in memory with the STREAM format (1 MiB chunks, what backups use)
and with one AESGCM call over the whole buffer (output buffers allocated and touched beforehand, so the baseline
is the cipher alone), interleaved, best of 3 after a warm-up. Goal: ≥ 1 GB/s encryption + decryption.
Part 2 generates text-like input files and, in a fresh process each, streams them through the whole backup
pipeline (read from a pipe as from pg_dump → gzip at the default level → encrypt → SHA-256 → file → fsync) and back
(decrypt → gunzip → unpack, as verify does before pg_restore), printing each process's peak RSS (VmHWM). Goal:
the same peak for both sizes. The files are deleted at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from singularity_ops.config import BackupConfig
from singularity_ops.controllers.backup.archive import ArchiveWriter, read_archive
from singularity_ops.controllers.backup.format import TAG_SIZE, BackupKey, EncryptingWriter, decrypt

MIB = 1 << 20
KEY = bytes(range(32))  # the bench's own fixed key: nothing real is encrypted


class NullSink:
    def write(self, data: bytes | memoryview) -> int:
        return len(data)


def best(seconds: list[float]) -> float:
    return min(seconds)


def throughput(size: int, rounds: int = 3) -> None:
    data = os.urandom(size)
    key = BackupKey(KEY)
    aead = AESGCM(KEY)
    sealed_once = bytearray(size + TAG_SIZE)
    opened_once = bytearray(size)
    nonce = bytes(12)
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, key)  # warm-up, and the ciphertext the STREAM decryption reads
    writer.write(data)
    writer.close()
    stream_sealed = sink.getvalue()
    aead.encrypt_into(nonce, data, None, sealed_once)
    aead.decrypt_into(nonce, bytes(sealed_once), None, opened_once)
    sealed_bytes = bytes(sealed_once)

    timings: dict[str, list[float]] = {"stream_enc": [], "stream_dec": [], "single_enc": [], "single_dec": []}
    for _ in range(rounds):
        started = time.perf_counter()
        writer = EncryptingWriter(NullSink(), key)
        writer.write(data)
        writer.close()
        timings["stream_enc"].append(time.perf_counter() - started)

        started = time.perf_counter()
        for _chunk in decrypt(io.BytesIO(stream_sealed), key, "bench"):
            pass
        timings["stream_dec"].append(time.perf_counter() - started)

        started = time.perf_counter()
        aead.encrypt_into(nonce, data, None, sealed_once)
        timings["single_enc"].append(time.perf_counter() - started)

        started = time.perf_counter()
        aead.decrypt_into(nonce, sealed_bytes, None, opened_once)
        timings["single_dec"].append(time.perf_counter() - started)

    rate = {name: size / best(values) / 1e9 for name, values in timings.items()}
    both = {way: 2 * size / (best(timings[f"{way}_enc"]) + best(timings[f"{way}_dec"])) / 1e9
            for way in ("stream", "single")}
    print(f"Part 1: {size // MIB} MiB in memory, best of {rounds}")
    print(f"  single-shot AES-256-GCM (baseline): encrypt {rate['single_enc']:5.2f} GB/s, decrypt "
          f"{rate['single_dec']:5.2f} GB/s, both {both['single']:5.2f} GB/s")
    print(f"  STREAM, 1 MiB chunks + HKDF:        encrypt {rate['stream_enc']:5.2f} GB/s, decrypt "
          f"{rate['stream_dec']:5.2f} GB/s, both {both['stream']:5.2f} GB/s")
    print(f"  ratio STREAM / single-shot: {both['stream'] / both['single']:.2f} "
          f"(goal: encryption + decryption >= 1 GB/s: {'met' if both['stream'] >= 1 else 'NOT met'})")


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


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_backup(source: Path, target: Path) -> None:
    import hashlib

    before = peak_rss_mib()
    started = time.perf_counter()
    process = subprocess.Popen(["cat", str(source)], stdout=subprocess.PIPE)
    digest = hashlib.sha256()
    with open(target, "wb") as raw:
        class Hashing:
            def write(self, data: bytes | memoryview) -> int:
                digest.update(data)
                return raw.write(data)

        writer = EncryptingWriter(Hashing(), BackupKey(KEY))
        archive = ArchiveWriter(writer, level=BackupConfig().compression_level)
        archive.add("database.dump", process.stdout, "pg_dump")  # type: ignore[arg-type]
        archive.finish({"id": "bench", "contents": archive.members})
        writer.close()
        raw.flush()
        os.fsync(raw.fileno())
    process.wait()
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_mib": peak_rss_mib(), "start_mib": before,
                      "out_bytes": target.stat().st_size}))


def child_read(target: Path) -> None:
    before = peak_rss_mib()
    started = time.perf_counter()
    total = 0
    with open(target, "rb") as raw:
        for event, value in read_archive(decrypt(raw, BackupKey(KEY), target.name), target.name):
            if event == "data":
                total += len(value)
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_mib": peak_rss_mib(), "start_mib": before,
                      "bytes": total}))


def run_child(*args: str) -> dict:
    output = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True).stdout
    return json.loads(output)


def memory(small_mib: int, large_mib: int, directory: Path) -> None:
    print(f"Part 2: peak RSS of a fresh process backing up (and reading back) a {small_mib} MiB and a {large_mib} "
          "MiB input")
    with tempfile.TemporaryDirectory(dir=directory, prefix="bench-backup-") as folder:
        peaks = {}
        for mib in (small_mib, large_mib):
            source, target = Path(folder) / f"input-{mib}", Path(folder) / f"backup-{mib}.sgbk"
            generate(source, mib * MIB)
            made = run_child("--child-backup", str(source), str(target))
            read = run_child("--child-read", str(target))
            assert read["bytes"] == mib * MIB
            peaks[mib] = (made["peak_mib"], read["peak_mib"])
            print(f"  {mib:5d} MiB: backup {made['seconds']:5.1f} s ({mib / made['seconds']:4.0f} MiB/s, "
                  f"{made['out_bytes'] / MIB:6.1f} MiB file), peak RSS {made['peak_mib']:5.1f} MiB "
                  f"(after imports {made['start_mib']:.1f}); read back {read['seconds']:5.1f} s "
                  f"({mib / read['seconds']:4.0f} MiB/s), peak RSS {read['peak_mib']:5.1f} MiB")
            source.unlink()
            target.unlink()
        grow = [peaks[large_mib][i] - peaks[small_mib][i] for i in (0, 1)]
        print(f"  peak RSS difference {large_mib} vs {small_mib} MiB: backup {grow[0]:+.1f} MiB, read back "
              f"{grow[1]:+.1f} MiB (goal: flat)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-mib", type=int, default=200)
    parser.add_argument("--large-mib", type=int, default=2048)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the inputs go")
    parser.add_argument("--child-backup", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-read", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_backup:
        child_backup(*args.child_backup)
    elif args.child_read:
        child_read(args.child_read)
    else:
        throughput(256 * MIB)
        memory(args.small_mib, args.large_mib, args.dir)


if __name__ == "__main__":
    main()
