"""What ``AlertPusher.push`` costs its caller (a controller's tick), with Alertmanager unreachable.

Run: ``.venv/bin/python bench/alert_push.py``. push() only builds the alert and queues it; the post happens in the
pusher's thread. Baseline in the same run: appending a ready-made alert to a bare deque. Prints per-call
microseconds of both and the ratio; 100 pushes should stay far below a tick (the old test's bound was 100 ms).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singularity_ops.alerting.push import AlertPusher, PushedAlert

ROUNDS = 100_000


def main() -> None:
    pusher = AlertPusher("http://127.0.0.1:1", max_queued=ROUNDS + 1).start()  # refused at once, retried with backoff
    try:
        started = time.perf_counter()
        for n in range(ROUNDS):
            pusher.push("ModelDemoted", "info", "demoted", labels={"model": f"m{n % 50}"})
        pushed = (time.perf_counter() - started) / ROUNDS
    finally:
        pusher.stop()
    ready = PushedAlert({"alertname": "ModelDemoted"}, {"summary": "demoted"}, datetime.now(UTC))
    queue: deque[PushedAlert] = deque()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        queue.append(ready)
    bare = (time.perf_counter() - started) / ROUNDS
    print(f"push(), Alertmanager unreachable, {ROUNDS} calls: {pushed * 1e6:.2f} µs each "
          f"(100 pushes: {pushed * 100 * 1e3:.3f} ms); bare deque.append {bare * 1e6:.3f} µs; "
          f"ratio {pushed / bare:.0f}x")


if __name__ == "__main__":
    main()
