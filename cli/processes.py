"""The long-running commands: ``run`` and ``exporter`` (the exporter process, with the controllers for ``run``) and
``controller NAME`` (one controller as its own process)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import threading
import time

from singularity_ops.config import Config
from singularity_ops.errors import DatabaseError, SingularityError

log = logging.getLogger("singularity_ops")


CONTROLLER_STOP_SECONDS = 60


def start_controllers(config: Config, names: list[str], stop: threading.Event) -> list[threading.Thread]:
    from singularity_ops.controllers.base import run_forever
    from singularity_ops.controllers.registry import load_all

    factories = load_all()
    threads = []
    for name in names:
        controller = factories[name](config)
        thread = threading.Thread(target=run_forever, args=(controller, stop), name=f"controller-{name}", daemon=True)
        thread.start()
        threads.append(thread)
        log.info("controller %s started (every %g s)", name, controller.interval_seconds)
    return threads


def cmd_controller(config: Config, args: argparse.Namespace) -> int:
    import signal

    from singularity_ops.controllers.registry import load_all

    if args.name not in load_all():
        known = ", ".join(sorted(load_all())) or "none yet"
        raise SingularityError(f"no controller named '{args.name}'; known: {known}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    threads = start_controllers(config, [args.name], stop)
    while not stop.wait(0.5) and any(t.is_alive() for t in threads):
        pass
    for thread in threads:
        thread.join(30)
    return 0


def cmd_exporter(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.tls import import_aiohttp

    import_aiohttp()  # first, before anything imports it: 2 MB of CA stores it never uses (singularity_ops/tls.py)
    from singularity_ops.exporter.app import Exporter, serve
    from singularity_ops.exporter.gateway.guard.access import check_exposure
    from singularity_ops.store import Database

    check_exposure(config)  # before the database starts: a refusal is one line, at once
    from singularity_ops.heap import limit_arenas

    limit_arenas()  # before any thread starts (singularity_ops/heap.py)
    database = None
    try:
        database = Database.open_migrated(config.database, config.home)
    except DatabaseError as exc:  # keep serving metrics; the catalogue keeper retries in the background
        log.warning("%s; starting without it and retrying", exc)
    exporter = Exporter.build(config, database=database, with_gateway=True, with_history=True)
    supervisor = None
    if config.database.url is None:  # the embedded server: start it again should it die
        from singularity_ops.embedded_postgres import EmbeddedSupervisor

        supervisor = EmbeddedSupervisor(config.home)
        exporter.registry.register(supervisor)
        supervisor.start()
    stop_controllers = threading.Event()
    controllers: list[threading.Thread] = []
    if args.command == "run":
        from singularity_ops.controllers.registry import load_all

        controllers = start_controllers(config, sorted(load_all()), stop_controllers)
    try:  # libuv's event loop when installed (pip install 'singularity-ops[uvloop]'): a slightly cheaper proxy hop
        import uvloop

        run = uvloop.run
    except ImportError:  # chosen here, run below: an error while serving is not "during" this ImportError
        run = asyncio.run
    run(serve(exporter))
    stop_controllers.set()
    # A controller in the middle of its tick (a backup, a validation) finishes it and closes what it holds: the
    # interpreter must not tear down under a running thread (an abort, and a half-written backup).
    deadline = time.monotonic() + CONTROLLER_STOP_SECONDS
    for thread in controllers:
        thread.join(max(0.0, deadline - time.monotonic()))
    busy = [thread.name for thread in controllers if thread.is_alive()]
    if supervisor is not None:
        supervisor.stop()
    if busy:
        log.warning("controllers still busy after %d s: %s; exiting without them", CONTROLLER_STOP_SECONDS,
                    ", ".join(busy))
        logging.shutdown()
        os._exit(0)  # a normal exit would abort in the busy thread's native code
    return 0
