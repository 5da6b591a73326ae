"""The `docvec` command line: the composition root that wires api, worker, vectordb and common."""

from docvec_cli.main import main

__all__ = ["main"]
