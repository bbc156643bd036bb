"""``OLLAMA_HOST`` parsed the way Ollama's own ``envconfig.Host`` does it.

``127.0.0.1:11434``, ``0.0.0.0``, ``:8080``, ``http://host``, ``https://host/prefix`` and ``[::1]:11434``
are all accepted; the scheme defaults to http, the port to 11434 (80/443 when the scheme is given).
"""

from __future__ import annotations

import ipaddress


def parse_ollama_host(value: str) -> str:
    text = value.strip()
    scheme, sep, hostport = text.partition("://")
    default_port = 11434
    if not sep:
        scheme, hostport = "http", text
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    else:
        raise ValueError(f"unsupported scheme {scheme!r} in OLLAMA_HOST {value!r}; use http:// or https://")
    hostport, _, path = hostport.partition("/")
    host, port = _split_host_port(hostport, default_port)
    if ":" in host:
        host = f"[{host}]"
    base = f"{scheme}://{host}:{port}"
    return f"{base}/{path.rstrip('/')}" if path.strip("/") else base


def _split_host_port(hostport: str, default_port: int) -> tuple[str, int]:
    bare = hostport.strip("[]")
    try:
        return str(ipaddress.ip_address(bare)), default_port  # an address without a port, IPv6 included
    except ValueError:
        pass
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif ":" in hostport:
        host, _, port_text = hostport.rpartition(":")
    else:
        host, port_text = hostport, ""
    host = host or "127.0.0.1"
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"invalid port {port_text!r} in OLLAMA_HOST {hostport!r}; expected 1-65535")
    return host, int(port_text)
