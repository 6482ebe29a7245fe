"""Command-line interface: a thin layer over the public Python API.

Each module below adds its commands to the one group in ``app``.
"""
from featcache.cli.app import cli
from featcache.cli import embed_cmds, eval_cmds, audit_cmds, model_cmds  # noqa: F401  (register commands)
from featcache.cli import backbone_cmds  # noqa: F401  (register commands)


def main():
    """Console-script entry point."""
    cli(prog_name="featcache")
