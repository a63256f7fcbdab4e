"""``streamproxy serve``: run the proxy with uvicorn.

Examples::

    streamproxy serve                                   # offline demo, or DeepSeek with a key
    DEEPSEEK_API_KEY=sk-... streamproxy serve --tools my_tools:TOOLS --port 8000
    streamproxy serve --upstream http://127.0.0.1:8101/v1 --port 0 --workers 2

With no key in ``--api-key-env`` (``DEEPSEEK_API_KEY``) and no ``--upstream``, the proxy starts on
its built-in offline demo (``streamproxy.demo``) and says so in its first log line. Once bound, it
prints ``streamproxy serve: listening on http://HOST:PORT`` (the real port when ``--port 0``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import socket
import sys
from dataclasses import asdict, replace
from typing import Any

from streamproxy.config import (
    DEEPSEEK_BASE_URL,
    DEFAULT_API_KEY_ENV,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_MAX_ARGUMENTS_SIZE,
    DEFAULT_MAX_REQUEST_SIZE,
    DEFAULT_MAX_ROUNDS,
    DEFAULT_MAX_TOOL_RESULT_SIZE,
    Config,
    read_client_keys,
)

# Workers are separate processes: the parent hands them the settings (never the keys, which stay
# in their own environment variables) and the shared approval secret through the environment.
CONFIG_ENV = "STREAMPROXY_SERVE_CONFIG"
SECRET_ENV = "STREAMPROXY_APPROVAL_SECRET"
# Turns on GET /_streamproxy/diagnostics like --diagnostics (for process managers and tests).
DIAGNOSTICS_ENV = "STREAMPROXY_DIAGNOSTICS"

logger = logging.getLogger("streamproxy.serve")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible proxy that runs server tools mid-stream",
        description="Serve /v1/chat/completions, /v1/models and /healthz.",
    )
    parser.add_argument(
        "--upstream",
        metavar="URL",
        help=f"upstream base URL as the openai SDK takes it (default {DEEPSEEK_BASE_URL})",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=DEFAULT_API_KEY_ENV,
        help=f"environment variable holding the upstream key (default {DEFAULT_API_KEY_ENV})",
    )
    parser.add_argument("--tools", metavar="MODULE:ATTR", help="server tools to load")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--max-rounds",
        type=int,
        default=DEFAULT_MAX_ROUNDS,
        help=f"upstream requests per client request (default {DEFAULT_MAX_ROUNDS})",
    )
    parser.add_argument(
        "--client-keys-env",
        metavar="VAR",
        help="environment variable with comma-separated client keys; requests need one",
    )
    parser.add_argument(
        "--max-request-size", type=int, default=DEFAULT_MAX_REQUEST_SIZE, metavar="BYTES"
    )
    parser.add_argument(
        "--max-arguments-size", type=int, default=DEFAULT_MAX_ARGUMENTS_SIZE, metavar="BYTES"
    )
    parser.add_argument(
        "--max-tool-result-size", type=int, default=DEFAULT_MAX_TOOL_RESULT_SIZE, metavar="BYTES"
    )
    parser.add_argument(
        "--keepalive",
        type=float,
        default=DEFAULT_KEEPALIVE_INTERVAL,
        metavar="SECONDS",
        help="send ': keep-alive' after this much silence (default 15)",
    )
    parser.add_argument(
        "--upstream-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="the longest the upstream may stay silent, mid-stream or before answering "
        "(default 600)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="retries of 429, 500, 503 and connection errors before the first byte (default 2)",
    )
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="the first retry's backoff, doubling after (default 0.5); Retry-After wins",
    )
    parser.add_argument(
        "--max-retry-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a longer Retry-After is not waited for: the error goes to the client (default 30)",
    )
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        default=os.environ.get(DIAGNOSTICS_ENV, "") not in ("", "0"),
        help=f"serve GET /_streamproxy/diagnostics (also: {DIAGNOSTICS_ENV}=1)",
    )
    parser.add_argument(
        "--strict-tools",
        choices=("auto", "on", "off"),
        default="auto",
        help="send server tools with strict: true (auto: when the upstream is DeepSeek)",
    )
    parser.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
    )
    parser.set_defaults(run=run)


def config_from_arguments(args: argparse.Namespace) -> Config:
    """The ``Config`` the flags describe (reads the key and client keys from the environment).

    Raises:
        ValueError: a flag is out of range or a named variable is missing.
    """
    api_key = os.environ.get(args.api_key_env) or None
    is_demo = args.upstream is None and api_key is None
    return Config(
        upstream_url=args.upstream or DEEPSEEK_BASE_URL,
        api_key=api_key,
        tools=args.tools,
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
        retries=args.retries,
        retry_base_delay=args.retry_delay,
        max_retry_wait=args.max_retry_wait,
        diagnostics=args.diagnostics,
        strict_tools=args.strict_tools,
        is_offline_demo=is_demo,
        log_level=args.log_level,
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_arguments(args)
        config = replace(config, approval_secret=secrets.token_bytes(32))
        _configure_logging(config.log_level)
        if config.is_offline_demo:
            logger.info(
                "offline demo: no %s and no --upstream, so replaying bundled recordings with the "
                "sample tool get_weather (set %s or pass --upstream for a real model)",
                args.api_key_env,
                args.api_key_env,
            )
        app = build_app(config, api_key_env=args.api_key_env, client_keys_env=args.client_keys_env)
    except ValueError as error:
        print(f"streamproxy serve: {error}", file=sys.stderr)
        return 2
    return serve(config, app, api_key_env=args.api_key_env, client_keys_env=args.client_keys_env)


def build_app(config: Config, *, api_key_env: str, client_keys_env: str | None) -> Any:
    """The app for ``config`` (the demo's transport and tools when offline)."""
    from streamproxy.proxy import create_app

    if config.is_offline_demo:
        from streamproxy.demo import DEMO_UPSTREAM_URL, demo_tools, demo_transport

        tools = demo_tools() if config.tools is None else None
        return create_app(
            replace(config, upstream_url=DEMO_UPSTREAM_URL),
            tools=tools,
            transport=demo_transport(),
        )
    return create_app(config)


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
    if config.workers == 1:
        server = uvicorn.Server(
            uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
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
    )
    from uvicorn.supervisors import Multiprocess

    Multiprocess(uvicorn_config, sockets=[sock]).run()
    return 0


def app_from_environment() -> Any:
    """The app factory each worker process calls (``--workers`` > 1)."""
    settings = json.loads(os.environ[CONFIG_ENV])
    api_key_env = settings.pop("api_key_env")
    client_keys_env = settings.pop("client_keys_env")
    settings["client_keys"] = read_client_keys(client_keys_env)
    settings["api_key"] = os.environ.get(api_key_env) or None
    settings["approval_secret"] = bytes.fromhex(os.environ[SECRET_ENV])
    config = Config(**settings)
    _configure_logging(config.log_level)
    return build_app(config, api_key_env=api_key_env, client_keys_env=client_keys_env)


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
