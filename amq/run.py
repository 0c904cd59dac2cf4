"""`python -m amq.run`: the AMQ search (amq.cli.run)."""

from amq.cli.run import cli, interrupted_message, main

__all__ = ["cli", "interrupted_message", "main"]

if __name__ == "__main__":
    cli()
