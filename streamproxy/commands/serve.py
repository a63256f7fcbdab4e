"""``streamproxy serve``: run the proxy with uvicorn.

Examples::

    streamproxy serve                                   # offline demo, or DeepSeek with a key
    DEEPSEEK_API_KEY=sk-... streamproxy serve --tools my_tools:TOOLS --port 8000
    streamproxy serve --upstream http://127.0.0.1:8101/v1 --port 0 --workers 2
    streamproxy serve --mcp ~/.cursor/mcp.json        # MCP servers' tools as server tools

With no key in ``--api-key-env`` (``DEEPSEEK_API_KEY``) and no ``--upstream``, the proxy starts on
its built-in offline demo (``streamproxy.demo``) and says so in its first log line. Once bound, it
prints ``streamproxy serve: listening on http://HOST:PORT`` (the real port when ``--port 0``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
from dataclasses import asdict, replace
from importlib.util import find_spec
from typing import Any, Literal, get_args

from streamproxy.config import (
    DEFAULT_API_KEY_ENV,
    ApprovalMode,
    Config,
    LogLevel,
    StrictMode,
    read_client_keys,
)

# Workers are separate processes: the parent hands them the settings (never the keys, which stay
# in their own environment variables) and the shared approval secret through the environment.
CONFIG_ENV = "STREAMPROXY_SERVE_CONFIG"
SECRET_ENV = "STREAMPROXY_APPROVAL_SECRET"
# Turns on GET /_streamproxy/diagnostics like --diagnostics (for process managers and tests).
DIAGNOSTICS_ENV = "STREAMPROXY_DIAGNOSTICS"
# prometheus_client's multiprocess mode (set before the workers import it).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

logger = logging.getLogger("streamproxy.serve")


DEFAULTS = Config()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` subcommand (its defaults are ``Config``'s)."""
    parser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible proxy that runs server tools mid-stream",
        description="Serve /v1/chat/completions, /v1/models and /healthz.",
    )
    add = parser.add_argument
    add(
        "--upstream",
        metavar="URL",
        help=f"upstream base URL as the openai SDK takes it (default {DEFAULTS.upstream_url})",
    )
    add(
        "--api-key-env",
        metavar="VAR",
        default=DEFAULT_API_KEY_ENV,
        help=f"environment variable holding the upstream key (default {DEFAULT_API_KEY_ENV})",
    )
    add("--tools", metavar="MODULE:ATTR", help="server tools to load")
    add(
        "--mcp",
        metavar="FILE",
        help='MCP servers whose tools become server tools: a {"mcpServers": ...} file as '
        "Claude Desktop, Cursor and VS Code write it (needs streamproxy[mcp])",
    )
    add("--host", default=DEFAULTS.host, help=f"address to bind (default {DEFAULTS.host})")
    add("--port", type=int, default=DEFAULTS.port, help="port (0: any free)")
    add("--workers", type=int, default=DEFAULTS.workers, help="worker processes")
    add(
        "--max-rounds",
        type=int,
        default=DEFAULTS.max_rounds,
        help=f"upstream requests per client request (default {DEFAULTS.max_rounds})",
    )
    add(
        "--client-keys-env",
        metavar="VAR",
        help="environment variable with comma-separated client keys; requests need one",
    )
    add(
        "--approvals",
        choices=get_args(ApprovalMode),
        default=DEFAULTS.approvals,
        help="how a needs_approval tool asks: a yes/no question in the chat, or a signed tool "
        f"call for SDK clients (default {DEFAULTS.approvals})",
    )
    add(
        "--state",
        metavar="URL",
        default=DEFAULTS.state_url,
        help="the state store: sqlite:///PATH, redis://HOST:PORT/DB or memory:// "
        f"(default {DEFAULTS.state_url})",
    )
    add("--max-request-size", type=int, default=DEFAULTS.max_request_size, metavar="BYTES")
    add("--max-arguments-size", type=int, default=DEFAULTS.max_arguments_size, metavar="BYTES")
    add(
        "--max-tool-result-size",
        type=int,
        default=DEFAULTS.max_tool_result_size,
        metavar="BYTES",
    )
    add(
        "--keepalive",
        type=float,
        default=DEFAULTS.keepalive_interval,
        metavar="SECONDS",
        help="send ': keep-alive' after this much silence "
        f"(default {DEFAULTS.keepalive_interval:g})",
    )
    add(
        "--upstream-timeout",
        type=float,
        default=DEFAULTS.upstream_timeout,
        metavar="SECONDS",
        help="the longest the upstream may stay silent, mid-stream or before answering "
        f"(default {DEFAULTS.upstream_timeout:g})",
    )
    add(
        "--header-timeout",
        type=float,
        default=DEFAULTS.header_timeout,
        metavar="SECONDS",
        help="a client's request head must arrive within this time, or 408 "
        f"(default {DEFAULTS.header_timeout:g})",
    )
    add(
        "--body-timeout",
        type=float,
        default=DEFAULTS.body_timeout,
        metavar="SECONDS",
        help="a client's request body must arrive within this time of its head, or 408 "
        f"(default {DEFAULTS.body_timeout:g})",
    )
    add(
        "--max-connections",
        type=int,
        default=DEFAULTS.max_connections,
        metavar="N",
        help="open client connections per process; beyond them, 503 "
        f"(default {DEFAULTS.max_connections})",
    )
    add(
        "--retries",
        type=int,
        default=DEFAULTS.retries,
        help="retries of 429, 500, 503 and connection errors before the first byte "
        f"(default {DEFAULTS.retries})",
    )
    add(
        "--retry-delay",
        type=float,
        default=DEFAULTS.retry_base_delay,
        metavar="SECONDS",
        help="the first retry's backoff, doubling after; Retry-After wins "
        f"(default {DEFAULTS.retry_base_delay:g})",
    )
    add(
        "--max-retry-wait",
        type=float,
        default=DEFAULTS.max_retry_wait,
        metavar="SECONDS",
        help="a longer Retry-After is not waited for: the error goes to the client "
        f"(default {DEFAULTS.max_retry_wait:g})",
    )
    add(
        "--diagnostics",
        action="store_true",
        default=os.environ.get(DIAGNOSTICS_ENV, "") not in ("", "0"),
        help=f"serve GET /_streamproxy/diagnostics (also: {DIAGNOSTICS_ENV}=1)",
    )
    add(
        "--strict-tools",
        choices=get_args(StrictMode),
        default=DEFAULTS.strict_tools,
        help="send server tools with strict: true (auto: when the upstream is DeepSeek)",
    )
    add(
        "--no-playground",
        dest="playground",
        action="store_false",
        help="do not serve the playground page at GET /",
    )
    add("--log-level", choices=get_args(LogLevel), default=DEFAULTS.log_level)
    parser.set_defaults(run=run)


def config_from_arguments(args: argparse.Namespace) -> Config:
    """The ``Config`` the flags describe (reads the key and client keys from the environment).

    Raises:
        ValueError: a flag is out of range or a named variable is missing.
    """
    api_key = os.environ.get(args.api_key_env) or None
    is_demo = args.upstream is None and api_key is None
    return Config(
        upstream_url=args.upstream or DEFAULTS.upstream_url,
        api_key=api_key,
        tools=args.tools,
        mcp_config=args.mcp,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_rounds=args.max_rounds,
        client_keys=read_client_keys(args.client_keys_env),
        max_request_size=args.max_request_size,
        max_arguments_size=args.max_arguments_size,
        max_tool_result_size=args.max_tool_result_size,
        keepalive_interval=args.keepalive,
        upstream_timeout=args.upstream_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
        retries=args.retries,
        retry_base_delay=args.retry_delay,
        max_retry_wait=args.max_retry_wait,
        diagnostics=args.diagnostics,
        playground=args.playground,
        strict_tools=args.strict_tools,
        approvals=args.approvals,
        state_url=args.state,
        is_offline_demo=is_demo,
        log_level=args.log_level,
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_arguments(args)
        if config.state_url.startswith("memory:"):
            # a per-process store: the workers still share one approval secret
            config = replace(config, approval_secret=secrets.token_bytes(32))
        _configure_logging(config.log_level)
        if config.is_offline_demo:
            logger.info(
                "offline demo: no %s and no --upstream, so replaying bundled recordings with the "
                "sample tool get_weather (set %s or pass --upstream for a real model)",
                args.api_key_env,
                args.api_key_env,
            )
        _warn_if_open_to_all(config, args.client_keys_env)
        app = build_app(config)
    except ValueError as error:
        print(f"streamproxy serve: {error}", file=sys.stderr)
        return 2
    return serve(config, app, api_key_env=args.api_key_env, client_keys_env=args.client_keys_env)


def build_app(config: Config) -> Any:
    """The app for ``config`` (the demo's transport and tools when offline); logs each tool."""
    from streamproxy.proxy import create_app
    from streamproxy.proxy.tools import ToolSet, load_tools

    tools = load_tools(config.tools) if config.tools else ToolSet()
    transport = None
    if config.is_offline_demo:
        from streamproxy.demo import DEMO_UPSTREAM_URL, demo_tools, demo_transport

        tools = tools if config.tools else demo_tools()
        config = replace(config, upstream_url=DEMO_UPSTREAM_URL)
        transport = demo_transport()
    for entry in tools:
        logger.info("%s", entry.describe())
    services = []
    if config.mcp_config:  # checked now; the servers start in the app's lifespan
        from streamproxy.proxy.mcp import McpTools, load_mcp_config
        from streamproxy.proxy.tools import TOOL_TRACE_CONTEXT

        services.append(
            McpTools(
                load_mcp_config(config.mcp_config),
                tools,
                call_meta=lambda: TOOL_TRACE_CONTEXT.get() or None,
            )
        )
    return create_app(config, tools=tools, transport=transport, services=services)


def serve(config: Config, app: Any, *, api_key_env: str, client_keys_env: str | None) -> int:
    """Bind, print the URL, and run uvicorn (in ``config.workers`` processes)."""
    import uvicorn

    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as error:
        print(
            f"streamproxy serve: cannot bind {config.host}:{config.port}: {error}", file=sys.stderr
        )
        return 1
    sock.listen(2048)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    host = f"[{config.host}]" if family == socket.AF_INET6 else config.host
    print(f"streamproxy serve: listening on http://{host}:{port}", flush=True)
    log_level = config.log_level
    loop, http = serving_stack()
    logging.getLogger("streamproxy").info(
        "serving on the %s event loop, %s HTTP parser", loop, http
    )
    guarded = _guarded_http(config, http)
    if config.workers == 1:
        server = uvicorn.Server(
            uvicorn.Config(
                app, log_level=log_level, access_log=False, lifespan="on", loop=loop, http=guarded
            )
        )
        server.run(sockets=[sock])
        return 0
    os.environ[CONFIG_ENV] = json.dumps(_portable(config, api_key_env, client_keys_env))
    os.environ[SECRET_ENV] = (config.approval_secret or b"").hex()
    uvicorn_config = uvicorn.Config(
        "streamproxy.commands.serve:app_from_environment",
        factory=True,
        workers=config.workers,
        log_level=log_level,
        access_log=False,
        loop=loop,
        http=guarded,
    )
    from uvicorn.supervisors import Multiprocess

    # the workers' metrics live in files of one fresh directory, summed by GET /metrics
    metrics_dir = None if os.environ.get(MULTIPROC_ENV) else tempfile.mkdtemp(prefix="streamproxy-")
    if metrics_dir is not None:
        os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        Multiprocess(uvicorn_config, sockets=[sock]).run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _guarded_http(config: Config, http: str) -> Any:
    """uvicorn's ``http`` protocol behind the connection guard (head/body deadlines, the cap)."""
    from streamproxy.proxy.guard import ConnectionLimits, ensure_file_limit, guarded_http

    warning = ensure_file_limit(config.max_connections)
    if warning is not None:
        logger.warning("%s", warning)
    limits = ConnectionLimits(
        header_timeout=config.header_timeout,
        body_timeout=config.body_timeout,
        max_connections=config.max_connections,
    )
    return guarded_http(http, limits)


def _warn_if_open_to_all(config: Config, client_keys_env: str | None) -> None:
    """One loud line when a non-loopback address is served without client keys."""
    if config.client_keys or is_loopback(config.host):
        return
    logger.warning(
        "serving on %s without client keys: anyone who can reach this address can use the "
        "proxy (and its upstream key); set client keys with --client-keys-env VAR, VAR holding "
        "comma-separated keys that clients send as 'Authorization: Bearer KEY'",
        config.host,
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def serving_stack() -> tuple[Literal["uvloop", "asyncio"], Literal["httptools", "h11"]]:
    """uvicorn's event loop and HTTP/1.1 parser: uvloop and httptools (both C, core dependencies,
    measured in ``benchmarks/bench_peers.py``); asyncio and h11 where their wheels are missing."""
    loop: Literal["uvloop", "asyncio"] = "uvloop" if find_spec("uvloop") else "asyncio"
    http: Literal["httptools", "h11"] = "httptools" if find_spec("httptools") else "h11"
    return loop, http


def app_from_environment() -> Any:
    """The app factory each worker process calls (``--workers`` > 1)."""
    settings = json.loads(os.environ[CONFIG_ENV])
    api_key_env = settings.pop("api_key_env")
    client_keys_env = settings.pop("client_keys_env")
    settings["client_keys"] = read_client_keys(client_keys_env)
    settings["api_key"] = os.environ.get(api_key_env) or None
    settings["approval_secret"] = bytes.fromhex(os.environ[SECRET_ENV]) or None
    config = Config(**settings)
    _configure_logging(config.log_level)
    return build_app(config)


def _portable(config: Config, api_key_env: str, client_keys_env: str | None) -> dict[str, object]:
    """The settings without secrets, for the workers' environment."""
    settings = asdict(config)
    for secret in ("api_key", "client_keys", "approval_secret"):
        settings.pop(secret)
    settings["api_key_env"] = api_key_env
    settings["client_keys_env"] = client_keys_env
    return settings


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("streamproxy")
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(level.upper())
