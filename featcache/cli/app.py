"""The click group every sub-command attaches to, and its error policy."""
from __future__ import annotations


import click

from featcache.errors import FeatcacheError


class _Group(click.Group):
    """Turns FeatcacheError into one line on stderr and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FeatcacheError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(package_name="featcache")
def cli():
    """Embed images once, then train and cross-validate heads in seconds."""


