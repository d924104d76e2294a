"""``segkit``: the command of the web app (``segkit app WORK``)."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import click

from segprep.lazycli import LazyGroup, setup_logging

COMMANDS = {"app": "segapp.cli:app"}
SHORT_HELP = {"app": "Review a WORK folder's masks and try trained models in a browser."}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, short_help=SHORT_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """segkit: the web app over segprep's WORK folders and segtrain's runs."""
    setup_logging(verbose)


@click.command()
@click.argument("work", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--runs", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of `segtrain run` output folders (each with best.pt) for the model page.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port (0: any free one).")
@click.option("--token", default=None,
              help="Require this token on every request (open the printed URL once); needed to "
                   "listen beyond this machine. 'auto' makes one.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="Where the model page's predictions run.")
def app(work: Path, runs: Path | None, host: str, port: int, token: str | None, device: str) -> None:
    """Review WORK's samples (keep / exclude / accept repair, written to
    WORK/reviews/decisions.csv for `segprep clean`) and try trained models on images.

    \b
    Examples:
      segkit app work --runs runs
      segkit app work --host 0.0.0.0 --port 8080 --token auto
    """
    import uvicorn

    from segapp.server import create_app, is_loopback
    from segprep.errors import SegprepError

    if token == "auto":
        token = secrets.token_urlsafe(16)
    if not is_loopback(host) and not token:
        raise SegprepError(f"--host {host} would let other machines read WORK and write decisions: "
                           f"add --token SECRET (or --token auto), or keep the default 127.0.0.1")
    application = create_app(work, runs, token=token, device=device)
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    click.echo(f"segkit app on {work}: {url}  (model page: {url.split('?')[0]}model; Ctrl+C stops)")
    uvicorn.run(application, host=host, port=port, log_level="warning")
