"""Command line: ``python -m otrs_sim --port 8089 [knobs]``.

Prints the URLs and the demo agent's credentials (this is a demo simulator - its
password is not a secret) and serves until interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .config import DEFAULT_WEBSERVICE, SimConfig
from .server import start_server


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="python -m otrs_sim",
        description="OTRS/Znuny GenericInterface REST simulator (GenericTicketConnectorREST).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--user", default=defaults.user, help="agent login")
    parser.add_argument("--password", default=defaults.password, help="agent password")
    parser.add_argument("--webservice", default=DEFAULT_WEBSERVICE, help="web service name")
    parser.add_argument(
        "--latency-ms", type=_non_negative, default=0, help="sleep before every web service call"
    )
    parser.add_argument(
        "--fail-rate",
        type=_rate,
        default=0.0,
        help="fraction of web service calls that fail before doing anything",
    )
    parser.add_argument(
        "--drop-after-commit",
        type=_rate,
        default=0.0,
        help="fraction of successful TicketCreate/TicketUpdate calls whose "
        "connection is reset after the change",
    )
    parser.add_argument(
        "--html-errors",
        action="store_true",
        help="injected failures are Apache HTML pages (half without any status line or headers)",
    )
    parser.add_argument(
        "--session-ttl",
        type=_non_negative,
        default=defaults.session_ttl,
        help="idle session lifetime in seconds, counted from creation",
    )
    parser.add_argument(
        "--session-max-ttl",
        type=_non_negative,
        default=defaults.session_max_ttl,
        help="absolute session lifetime in seconds",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=defaults.max_length,
        help="largest accepted request body (bytes); larger gets 413",
    )
    parser.add_argument("--state", metavar="FILE", help="persist tickets and sessions to FILE")
    parser.add_argument(
        "--webhook-url",
        default="",
        help="POST a Ticket::Generic invoker payload here on state changes",
    )
    parser.add_argument(
        "--webhook-secret-header",
        default="",
        metavar="'NAME: VALUE'",
        help="extra header sent with every webhook",
    )
    parser.add_argument(
        "--welcome-ticket",
        action="store_true",
        help="start with Znuny's welcome ticket as TicketID 1",
    )
    parser.add_argument(
        "--dynamic-field",
        action="append",
        default=[],
        metavar="NAME",
        help="extra ticket dynamic field (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the fault knobs")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = SimConfig(
        latency_ms=args.latency_ms,
        fail_rate=args.fail_rate,
        drop_after_commit=args.drop_after_commit,
        html_errors=args.html_errors,
        session_ttl=args.session_ttl,
        session_max_ttl=args.session_max_ttl,
        webhook_url=args.webhook_url,
        webhook_secret_header=args.webhook_secret_header,
        user=args.user,
        password=args.password,
        webservice=args.webservice,
        seed=args.seed,
        max_length=args.max_length,
        welcome_ticket=args.welcome_ticket,
        dynamic_fields=tuple(args.dynamic_field),
        log_requests=not args.quiet,
    )
    sim = start_server(args.host, args.port, config, state_file=args.state)
    print(
        "OTRS simulator running\n"
        f"  page:            {sim.url}/\n"
        f"  web service:     {sim.base_url}\n"
        f"  (also)           {sim.url}/znuny/nph-genericinterface.pl/Webservice/{config.webservice}\n"
        f"  agent login:     {config.user}\n"
        f"  agent password:  {config.password}\n"
        f"  ticket link:     {sim.url}/otrs/index.pl?Action=AgentTicketZoom;TicketID=<id>\n"
        f"  control:         {sim.url}/_sim/config  {sim.url}/_sim/stats  POST {sim.url}/_sim/reset\n"
        + (f"  state file:      {args.state}\n" if args.state else "")
        + (f"  webhook:         {config.webhook_url}\n" if config.webhook_url else ""),
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    sim.shutdown()
    print("OTRS simulator stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
