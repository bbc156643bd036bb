"""The command line: every `singularity-ops` command and its argument parsing, `stack` included.

The one part that may import all the others; each command imports what it needs when it runs, so building the
parser stays cheap. `main` is the console entry point.
"""

from singularity_ops.cli.main import main

__all__ = ["main"]
