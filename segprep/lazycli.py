"""A click group that imports each sub-command's module only when it is used.

Commands stay fast to start (``segprep --help`` does not import torch or albumentations),
and an expected error anywhere in the library becomes one line and exit code 1.
"""

from __future__ import annotations

import errno
import importlib
import logging

import click

from segprep.errors import SegprepError

_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


class LazyGroup(click.Group):
    """``lazy_commands`` maps a command name to ``"package.module:attribute"``; ``short_help``
    maps it to the one line the group's ``--help`` shows, so listing the commands imports none
    of them (click would import each one to read its docstring)."""

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None,
                 short_help: dict[str, str] | None = None,
                 expected_errors: tuple[type[BaseException], ...] = (SegprepError,), **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})
        self.short_help = dict(short_help or {})
        self.expected_errors = expected_errors

    def list_commands(self, ctx: click.Context) -> list[str]:
        # Lazy commands in the order given (the pipeline's), then any others.
        others = sorted(set(super().list_commands(ctx)) - set(self.lazy_commands))
        return list(self.lazy_commands) + others

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            module_name, attr = self.lazy_commands[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.short_help:
                rows.append((name, self.short_help[name]))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except self.expected_errors as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            # A folder that cannot be written (read-only, full disk, no permission) is the
            # user's situation, not a bug: one line naming the file, no traceback.
            if exc.errno not in _NOT_WRITABLE:
                raise
            where = exc.filename or "output folder"
            raise click.ClickException(f"{where}: {exc.strerror or exc}; choose another output "
                                       f"folder or free some space") from exc


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
