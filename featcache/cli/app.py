"""The click group every sub-command attaches to, and its error policy."""
from __future__ import annotations

import logging
import re

import click

from featcache.errors import FeatcacheError


def flag_names(group: click.Group) -> dict:
    """Python parameter name -> its long option (``image_size`` -> ``--image-size``)."""
    flags = {}
    for command in group.commands.values():
        for param in command.params:
            longs = [o for o in param.opts if o.startswith("--")]
            if isinstance(param, click.Option) and longs:
                flags.setdefault(param.name, longs[0])
    return flags


def as_flags(message: str, flags: dict) -> str:
    """Library messages name Python parameters (``backbone=KEY``); say ``--backbone KEY``."""
    def sub(m):
        return f"{flags[m.group(1)]} " if m.group(1) in flags else m.group(0)
    return re.sub(r"(?<![\w.\-/])([a-z][a-z0-9_]*)=(?!=)", sub, message)


class _Echo(logging.Handler):
    """Library warnings (skipped root images, fallbacks) as ``note:`` lines on stderr."""

    def __init__(self, flags: dict):
        super().__init__(logging.WARNING)
        self.flags = flags

    def emit(self, record):
        click.echo(f"note: {as_flags(record.getMessage(), self.flags)}", err=True)


class _Group(click.Group):
    """Turns FeatcacheError into one line on stderr and exit status 1."""

    def invoke(self, ctx):
        flags = flag_names(self)
        handler = _Echo(flags)
        log = logging.getLogger("featcache")
        level = log.level
        log.addHandler(handler)
        # notes must not depend on the root logger's level (libraries change it)
        log.setLevel(min(level or logging.WARNING, logging.WARNING))
        try:
            return super().invoke(ctx)
        except FeatcacheError as exc:
            raise click.ClickException(as_flags(str(exc), flags)) from None
        finally:
            log.removeHandler(handler)
            log.setLevel(level)


@click.group(cls=_Group)
@click.version_option(package_name="featcache")
def cli():
    """Embed images once, then train and cross-validate heads in seconds."""
