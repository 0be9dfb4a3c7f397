"""`relaykit serve`: an OpenAI-compatible server whose requests name a strategy as their model."""

from __future__ import annotations

import argparse
import os

from .. import api
from ..errors import RelaykitError
from .common import (
    add_kv_options,
    add_model_options,
    kv_policy_from_args,
    load_models_from_args,
)


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "serve",
        help="an OpenAI-compatible server: a request's `model` names a strategy",
        description="Serve /v1/completions and /v1/chat/completions (streaming too), /v1/models and /health. "
        "A request's `model` is a strategy or a variant, e.g. relaygen or 'relaygen[speculative=8]'; all requests "
        "share one scheduler's batched forwards. Needs the serve extra: pip install 'relaykit[serve]'.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", help="require Authorization: Bearer KEY on every endpoint but /health "
                        "(default: the RELAYKIT_API_KEY environment variable; none: no key)")
    parser.add_argument("--max-concurrency", type=int,
                        help="requests answered at once; more get a 429 (default: no limit)")
    parser.add_argument("--suffix-cache", type=int, default=0, metavar="TOKENS",
                        help="tokens of recent outputs that suffix drafters (suffix, speculative[suffix=true], "
                        "relaygen[suffix=true]) may draft from across requests, oldest evicted first (default 0: "
                        "off, so one client's text never shapes another's drafts; a request's n choices always "
                        "draft from each other)")
    add_model_options(parser)
    add_kv_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as error:
        raise RelaykitError(f"relaykit serve needs FastAPI and uvicorn ({error.name} is missing): "
                            "pip install 'relaykit[serve]'") from error
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise RelaykitError(f"--max-concurrency must be >= 1, got {args.max_concurrency}")
    if args.suffix_cache < 0:
        raise RelaykitError(f"--suffix-cache must be >= 0 tokens, got {args.suffix_cache}")
    policy = kv_policy_from_args(args)
    from ..vocabulary import EXPERTS

    fusion = ("router", EXPERTS) if args.router or args.expert else ()  # FusionRoute's models when named
    tuned = api.tuned_settings(args.large, args.small)
    tuned_names = [name for name, entry in (tuned.strategies if tuned else {}).items() if "options" in entry]
    # what bare names run with (a prober, ...)
    helpers = api.required_roles(tuned_names, add_baseline=False, tuned=tuned)
    models = load_models_from_args(args, tuple(dict.fromkeys(("large", "small", *fusion, *helpers))))
    api_key = args.api_key or os.environ.get("RELAYKIT_API_KEY") or None
    app = create_app(models, kv_policy=policy, api_key=api_key, max_concurrency=args.max_concurrency,
                     recent_tokens=args.suffix_cache)
    names = ", ".join(app.state.service.available())
    print(f"relaykit: serving {names} at http://{args.host}:{args.port}/v1"
          + (" (API key required)" if api_key else ""))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
