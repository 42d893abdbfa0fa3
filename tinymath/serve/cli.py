"""`tinymath serve [MODELS_OR_STUDY_DIR ...] [--port 8000]`: the playground, on this machine only.

    tinymath serve                          the models in ./models
    tinymath serve runs/add/model.bin       one model file (several may be given)
    tinymath serve studies/classic-ladder   a study folder: every run's model, and its accuracy plot

The page is http://127.0.0.1:PORT/; the API is POST /solve and GET /models (see tinymath.serve.app).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="*", metavar="MODELS_OR_STUDY_DIR",
                   help="model files, folders of them, or a study folder (default: ./models)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--threads", type=int, help="engine threads per model (batch engine)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another Host name to accept (the loopback names and the bound address always are)")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        print("tinymath serve needs the serve extra: pip install 'tinymath[serve]'", file=sys.stderr)
        return 2
    from .app import Service, allowed_hosts, create_app, find_models, load_models

    files, plot = find_models(args.targets)
    models = load_models(files, args.threads)
    service = Service(models, plot)
    if not ipaddress_is_loopback(args.host):
        print(f"warning: binding {args.host} makes the playground reachable from other machines", file=sys.stderr)
    app = create_app(service, allowed_hosts=allowed_hosts(args.host, args.allow_host))
    for m in models:
        print(f"  {m.name:<24} {m.params:>10,} params  {m.path}")
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    _announce(server, args.host)
    server.run()
    return 0


def ipaddress_is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _announce(server, host: str) -> None:
    """Print the URL once the socket is bound (port 0 gets its real number), flushed for scripts and tests."""
    started = server.startup

    async def startup(sockets=None):
        await started(sockets=sockets)
        for s in server.servers:
            for sock in s.sockets:
                port = sock.getsockname()[1]
                shown = f"[{host}]" if ":" in host else host
                print(f"serving on http://{shown}:{port}/  (Ctrl-C stops)", flush=True)
                return

    server.startup = startup
