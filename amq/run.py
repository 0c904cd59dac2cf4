"""`python -m amq.run`: the AMQ search (amq.cli.run)."""

from amq.cli.run import interrupted_message, main

__all__ = ["interrupted_message", "main"]

if __name__ == "__main__":
    main()
