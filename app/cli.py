"""`distillery`: serve the API, migrate the database, manage API keys and tenants, or run the demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distillery", description="Knowledge distillation as a service.")
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser("migrate", help="Bring the database to the current schema (alembic upgrade head).")
    migrate.add_argument("--url", help="Database URL (default: DISTILLERY_DATABASE_URL or the embedded SQLite file).")

    serve = commands.add_parser("serve", help="Run the HTTP API with uvicorn (SQLite is migrated on startup).")
    serve.add_argument("--host", help="Default: DISTILLERY_API_HOST (127.0.0.1).")
    serve.add_argument("--port", type=int, help="Default: DISTILLERY_API_PORT (8000).")

    demo = commands.add_parser(
        "demo", help="Train a teacher on the built-in digits, distill it through the API, download the student."
    )
    demo.add_argument("--url", default="http://127.0.0.1:8000", help="The running service.")
    demo.add_argument("--epochs", type=int, default=5, help="Student training epochs.")
    demo.add_argument("--out", default=".", help="Folder to download student.safetensors into.")
    demo.add_argument("--timeout", type=float, default=600.0, help="Give up waiting for the job after this long.")

    demo.add_argument(
        "--key", default=os.environ.get("DISTILLERY_API_KEY"), help="API key (default: DISTILLERY_API_KEY)."
    )

    from app.auth.cli import add_commands

    add_commands(commands)

    args = parser.parse_args(argv)
    # The demo draws a progress bar: only warnings may interrupt it (httpx logs every request at INFO).
    level = logging.WARNING if args.command == "demo" else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "migrate":
        from app.migrate import upgrade_to_head
        from app.settings import get_settings

        url = args.url or get_settings().database_url
        upgrade_to_head(url)
        print(f"database at head: {url.split('@')[-1]}")
        return 0
    if args.command == "serve":
        import uvicorn

        from app.main import create_app
        from app.settings import get_settings

        settings = get_settings()
        uvicorn.run(create_app(settings), host=args.host or settings.api_host, port=args.port or settings.api_port)
        return 0
    if args.command in ("keys", "tenants"):
        from app.auth import cli as auth_cli

        return auth_cli.run(args)
    from app.demo import run_demo

    return run_demo(args.url, epochs=args.epochs, out_dir=args.out, timeout=args.timeout, key=args.key)


if __name__ == "__main__":
    sys.exit(main())
