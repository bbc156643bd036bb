"""``singularity-ops security``: the threat detector's events and bans, read from the history database.

    singularity-ops security events [--since 1h] [--client ID] [--limit 100] [--json]
    singularity-ops security bans list [--all] [--json]
    singularity-ops security bans unban CLIENT

An unbanned client is let in by every running gateway within ``guard.sync_seconds`` (they re-read the bans).

``singularity-ops keys``: the client API keys in ``gateway.api_keys_file`` (running gateways re-read it within
``guard.sync_seconds``)::

    singularity-ops keys add ID [--scope admin] [--json]   # prints the new key once; only its hash is kept
    singularity-ops keys list [--json]
    singularity-ops keys revoke ID
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from singularity_ops.cli.tables import print_table
from singularity_ops.config import Config
from singularity_ops.errors import ConfigError, SingularityError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``30m``, ``1h``, ``2d``, ``1w`` ago, or an ISO 8601 time (UTC when it names no zone)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(value.strip())
    if match:
        return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30m, 1h, 2d or an ISO 8601 time, "
                                         f"got {value!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def add_parser(subparsers: Any, common: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    security = subparsers.add_parser("security", help="the gateway's threat detector: events and bans")
    commands = security.add_subparsers(dest="security_command", metavar="COMMAND", required=True)
    events = commands.add_parser("events", help="detections, newest first")
    events.add_argument("--since", type=parse_since, default=None, metavar="WHEN",
                        help="only events after this: 30m, 1h, 2d, 1w or an ISO 8601 time (default 24h)")
    events.add_argument("--client", metavar="ID", help="only this client (an API key's id or an address)")
    events.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    events.add_argument("--json", action="store_true", help="print the result as JSON")
    common(events)
    bans = commands.add_parser("bans", help="banned clients")
    actions = bans.add_subparsers(dest="bans_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="clients banned now")
    listing.add_argument("--all", action="store_true", help="also bans that expired or were lifted (last 100)")
    listing.add_argument("--json", action="store_true", help="print the result as JSON")
    common(listing)
    unban = actions.add_parser("unban", help="lift a client's ban now")
    unban.add_argument("client", metavar="CLIENT", help="the client id as `security bans list` shows it")
    common(unban)
    return security


def run(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.store import Database

    database = Database.open_migrated(config.database, config.home)
    with database.connect(autocommit=True) as conn:
        if args.security_command == "events":
            return events(conn, args)
        if args.bans_command == "list":
            return list_bans(conn, args)
        return unban(conn, args.client)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def events(conn: Any, args: argparse.Namespace) -> int:
    since = args.since or datetime.now(UTC) - timedelta(hours=24)
    query = ("SELECT at, client, kind, action, score, reason, prompt_hash, excerpt FROM security_events "
             "WHERE at >= %s" + (" AND client = %s" if args.client else "") + " ORDER BY at DESC LIMIT %s")
    params: list[Any] = [since, *([args.client] if args.client else []), max(1, args.limit)]
    rows = conn.execute(query, params).fetchall()
    found = [{"at": _iso(at), "client": client, "kind": kind, "action": action, "score": score, "reason": reason,
              "prompt_hash": digest, "excerpt": excerpt}
             for at, client, kind, action, score, reason, digest, excerpt in rows]
    if args.json:
        print(json.dumps({"since": _iso(since), "events": found}, indent=2))
    elif not found:
        print(f"no security events since {since:%Y-%m-%d %H:%M:%S} UTC")
    else:
        table = [["AT (UTC)", "CLIENT", "KIND", "ACTION", "SCORE", "REASON / EXCERPT"]]
        for row in found:
            score = row["score"]
            detail = row["reason"] or ""
            if row["excerpt"]:
                detail += f" — “{row['excerpt']}”"
            table.append([row["at"][:19].replace("T", " "), row["client"], row["kind"], row["action"],
                          f"{score:.2f}" if score is not None else "-", detail])
        print_table(table)
    return 0


def list_bans(conn: Any, args: argparse.Namespace) -> int:
    if args.all:
        query = ("SELECT client, kind, reason, at, until, strikes, lifted_at, lifted_by FROM security_bans "
                 "ORDER BY at DESC LIMIT 100")
    else:
        query = ("SELECT DISTINCT ON (client) client, kind, reason, at, until, strikes, lifted_at, lifted_by "
                 "FROM security_bans WHERE lifted_at IS NULL AND until > now() ORDER BY client, until DESC")
    now = datetime.now(UTC)
    bans = []
    for client, kind, reason, at, until, strikes, lifted_at, lifted_by in conn.execute(query).fetchall():
        active = lifted_at is None and until > now
        bans.append({"client": client, "kind": kind, "reason": reason, "banned_at": _iso(at), "until": _iso(until),
                     "strikes": strikes, "active": active,
                     "retry_after_seconds": max(0, round((until - now).total_seconds())) if active else 0,
                     "lifted_at": _iso(lifted_at), "lifted_by": lifted_by})
    if args.json:
        print(json.dumps({"bans": bans}, indent=2))
    elif not bans:
        print("no client is banned" if not args.all else "no bans recorded")
    else:
        table = [["CLIENT", "KIND", "STRIKES", "UNTIL (UTC)", "LEFT", "REASON"]]
        for ban in bans:
            left = f"{ban['retry_after_seconds']} s" if ban["active"] else ("lifted" if ban["lifted_at"] else "expired")
            table.append([ban["client"], ban["kind"], str(ban["strikes"]), ban["until"][:19].replace("T", " "), left,
                          ban["reason"]])
        print_table(table)
    return 0


def unban(conn: Any, client: str) -> int:
    from singularity_ops.exporter.gateway.guard.bans import lift

    if not lift(conn, client, "cli"):
        raise SingularityError(f"client {client!r} is not banned; `singularity-ops security bans list` shows who is")
    print(f"unbanned {client}; running gateways let it in within guard.sync_seconds "
          f"(failed authentications it made before are forgotten)")
    return 0


# --- keys ---------------------------------------------------------------------------------------------------------


def add_keys_parser(subparsers: Any, common: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    keys = subparsers.add_parser("keys", help="client API keys of the gateway (gateway.api_keys_file)")
    commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    add = commands.add_parser("add", help="make a key, print it once, append its hash to the keys file")
    add.add_argument("id", metavar="ID", help="who the key is for, e.g. open-webui (letters, digits, . _ @ : -)")
    add.add_argument("--scope", choices=["inference", "admin"], default="inference",
                     help="inference (default): generate, chat, embeddings, model listing; admin: also pull, push, "
                          "create, copy, delete models and upload blobs")
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    listing = commands.add_parser("list", help="the keys' ids and scopes (never the keys)")
    listing.add_argument("--json", action="store_true", help="print the result as JSON")
    revoke = commands.add_parser("revoke", help="remove a key; running gateways refuse it within guard.sync_seconds")
    revoke.add_argument("id", metavar="ID", help="the key's id as `keys list` shows it")
    for parser in (add, listing, revoke):
        parser.add_argument("--file", metavar="PATH", type=Path,
                            help="the keys file (default: gateway.api_keys_file of the configuration)")
        common(parser)
    return keys


def run_keys(config: Config, args: argparse.Namespace) -> int:
    from singularity_ops.exporter.gateway.guard.keys import ADMIN, INFERENCE, add_key, read_keys, revoke_key

    path = args.file or config.gateway.api_keys_file
    if path is None:
        raise ConfigError("no keys file: set gateway.api_keys_file in the configuration (the gateway reads it), or "
                          "pass --file PATH")
    path = path.expanduser()
    if args.keys_command == "add":
        scopes = (INFERENCE, ADMIN) if args.scope == ADMIN else (INFERENCE,)
        key, added = add_key(path, args.id, scopes)
        if args.json:
            print(json.dumps({"id": added.id, "key": key, "scopes": list(scopes), "file": str(path)}))
        else:
            print(key)
            print(f"added key {added.id!r} (scopes {','.join(scopes)}) to {path}; the key is shown only now, the file "
                  f"keeps its hash. Clients send 'Authorization: Bearer KEY'; running gateways load it within "
                  f"guard.sync_seconds", file=sys.stderr)
        return 0
    if args.keys_command == "list":
        keys = read_keys(path) if path.exists() else []
        if args.json:
            print(json.dumps({"file": str(path), "keys": [
                {"id": k.id, "scopes": sorted(k.scopes), "sha256_prefix": k.digest[:12]} for k in keys]}, indent=2))
        elif not keys:
            print(f"no keys in {path}; add one with `singularity-ops keys add ID`")
        else:
            print_table([["ID", "SCOPES", "SHA256"],
                         *([k.id, ",".join(s for s in (INFERENCE, ADMIN) if s in k.scopes), k.digest[:12] + "…"]
                           for k in keys)])
        return 0
    if not path.exists() or not revoke_key(path, args.id):
        raise SingularityError(f"no key {args.id!r} in {path}; `singularity-ops keys list` shows the ids")
    print(f"revoked key {args.id!r} in {path}; running gateways refuse it within guard.sync_seconds")
    return 0
