"""Folders a newcomer might have, for ingest tests: odd file names, symlinks out of the folder and in it."""

from __future__ import annotations

import os
from pathlib import Path

LATIN1_NAME = b"caf\xe9 notes.md"  # "café" written by a Latin-1 system: not UTF-8
LATIN1_KEY = "caf\\xe9 notes.md"  # its source key: the byte escaped
LATIN1_NAME_SHOWN = "caf\ufffd notes.md"  # its stored file name: readable


def write_bytes(path: Path | bytes, text: str) -> None:
    """Write `text` at `path` (bytes for a name that is not UTF-8)."""
    with open(path, "wb") as f:
        f.write(text.encode())


def odd_folder(root: Path, outside: Path) -> Path:
    """Five documents with a plain, a Latin-1, a newline and a backslash name (one in a subfolder), and
    three symlinks: to a file outside the folder, to a file in it (an alias), and back up (a loop)."""
    (root / "sub").mkdir(parents=True)
    outside.mkdir(parents=True, exist_ok=True)
    write_bytes(root / "plain.md", "# Plain\n\nKayaks glide across calm mountain lakes at dawn.\n")
    write_bytes(os.fsencode(root) + b"/" + LATIN1_NAME,
                "# Cafe\n\nEspresso is brewed by forcing hot water through coffee.\n")
    write_bytes(os.fsencode(root) + b"/line\nbreak.md", "# Break\n\nLighthouses warn ships away from rocky coasts.\n")
    write_bytes(root / "back\\slash.md", "# Slash\n\nBeavers build dams from branches and river mud.\n")
    write_bytes(root / "sub" / "deep.md", "# Deep\n\nGlaciers carve valleys shaped like the letter U.\n")
    write_bytes(outside / "secret.txt", "the host's secret, never to be uploaded")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "alias.md").symlink_to("plain.md")
    (root / "sub" / "loop").symlink_to("..")
    return root
