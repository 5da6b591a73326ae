"""Shared benchmark helpers: JSON line output, run sizes (--quick, --smoke), machine state, generated prose."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SUBJECTS = [
    "the harbour master", "a retired engineer", "the village council", "our research group",
    "the night nurse", "a young botanist", "the museum curator", "the railway inspector",
    "an apprentice baker", "the city archivist", "a visiting geologist", "the school librarian",
    "the ferry captain", "a market gardener", "the orchestra conductor", "a data analyst",
]
VERBS = [
    "noticed", "argued", "recorded", "explained", "suspected", "demonstrated", "wrote", "reported",
    "discovered", "remembered", "estimated", "confirmed", "doubted", "observed", "proposed",
]
CLAIMS = [
    "the tide tables had been wrong for a decade", "the old bridge could carry twice its rated load",
    "rainfall in the valley was shifting towards the autumn", "the bees preferred the lime trees",
    "the survey maps disagreed with the parish records", "the bread rose faster in copper tins",
    "the archive's oldest letters were written on reused paper",
    "the signal delays followed the temperature of the rails",
    "the glacier retreated most quickly in dry winters", "children read more when the library opened late",
    "the orchard's yield depended on late frosts", "the violins went out of tune near the heaters",
    "night shifts were quieter after the new lighting", "customers bought more bread on foggy days",
    "the river carried more silt after the forest was thinned",
    "sales of umbrellas predicted the number of late trains",
]
CONNECTIVES = [
    "At first nobody believed it.", "The evidence was patchy but persistent.",
    "Several letters in the local paper disputed the point.", "A second survey was commissioned.",
    "The explanation turned out to be simpler than expected.", "Records from earlier years helped.",
    "It took three seasons of careful measurement to be sure.", "The committee asked for more data.",
]
DETAILS = [
    "using a notebook, a borrowed thermometer and a great deal of patience",
    "after comparing ledgers kept by three generations of clerks",
    "with the help of students who counted by hand every morning",
    "by cross-checking the figures against photographs from the period",
    "while the rest of the town was preoccupied with the harvest festival",
    "despite the objections of the regional office",
]
HEADINGS = [
    "Background", "Early observations", "Measurements", "Disagreements", "A second look",
    "What the records show", "Consequences", "Open questions", "Method", "Summary",
]


def prose_document(rng: random.Random, sections: int, paragraphs: int, sentences: int) -> str:
    """A markdown document of varied English prose (seeded, so every system gets the same text)."""
    parts = [f"# Field notes {rng.randrange(10_000)}"]
    for _ in range(sections):
        parts.append(f"## {rng.choice(HEADINGS)}")
        for _ in range(paragraphs):
            words = []
            for _ in range(sentences):
                if rng.random() < 0.25:
                    words.append(rng.choice(CONNECTIVES))
                else:
                    words.append(
                        f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} that "
                        f"{rng.choice(CLAIMS)}, {rng.choice(DETAILS)}."
                    )
            parts.append(" ".join(words))
    return "\n\n".join(parts) + "\n"


def size_flags(parser: argparse.ArgumentParser, quick_help: str) -> None:
    """`--quick` (within 60 s on 2 cores; `quick_help` says what it runs) and `--smoke` (seconds of work on
    tiny data through the same code; what tests/bench runs, so that no benchmark rots unnoticed)."""
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help=quick_help)
    sizes.add_argument("--smoke", action="store_true",
                       help="seconds of work on tiny data, the code of --quick (what the test suite runs)")


def by_size(args: argparse.Namespace, *, full: T, quick: T, smoke: T) -> T:
    """The value for the size `size_flags` chose."""
    return smoke if args.smoke else quick if args.quick else full


def size_keys(args: argparse.Namespace) -> dict[str, bool]:
    """The summary's record of the size a run had."""
    return {"quick": args.quick, "smoke": args.smoke}


def generated_corpus(root: Path, documents: int, seed: int = 42) -> Path:
    """`documents` short markdown files of generated prose under `root`: the corpus of a smoke run (no
    package to install, the same on every machine)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        (root / f"notes{i:02d}.md").write_text(prose_document(rng, sections=2, paragraphs=2, sentences=4))
    return root


# The Python documentation's library reference from Debian's python3-doc (never copied into the repository).
DEFAULT_CORPORA = (Path("/usr/share/doc/python3/html/library"), Path("/usr/share/doc/python3-doc/html/library"))


def default_corpus(corpus: Path | None) -> Path:
    """`corpus`, else python3-doc's HTML; exits with what to do when neither is there."""
    root = corpus or next((c for c in DEFAULT_CORPORA if c.is_dir()), None)
    if root is None or not root.is_dir():
        sys.exit("no corpus: install the Python documentation (apt-get install python3-doc) or pass --corpus DIR")
    return root


def corpus_files(root: Path, count: int | None, max_bytes: int, *, exactly: bool = False) -> list[Path]:
    """The first `count` files below `root` by path (all with None), each at most `max_bytes`, hidden
    files left out (deterministic). `exactly`: exit unless there are `count` of them."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.stat().st_size <= max_bytes)
    if exactly and count is not None and len(files) < count:
        sys.exit(f"{root} has {len(files)} files of at most {max_bytes} bytes; {count} are needed")
    files = files[:count] if count else files
    if not files:
        sys.exit(f"{root} has no files of at most {max_bytes} bytes")
    return files


def machine_state() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(load[0], 2),
    }


def emit(bench: str, metric: str, value: Any, unit: str, **extra: Any) -> None:
    print(json.dumps({"bench": bench, "metric": metric, "value": value, "unit": unit, **extra}), flush=True)


def summary(bench: str, **values: Any) -> None:
    print(json.dumps({"bench": bench, "summary": True, **values}), flush=True)


class BareModel:
    """The bundled model as an application calls it: `SentenceTransformer.encode` (fp32), torch on all the cores
    (the baseline of `bench.pipeline`, the query embedder of `bench.search`'s in-process peers). docvec's
    own torch embedder gives the same vectors (within ~1e-6) through a leaner forward."""

    def __init__(self, device: str = "cpu") -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        from common.embedding.st_embedder import bundled_model_path, force_offline

        force_offline()
        torch.set_num_threads(os.cpu_count() or 1)
        self.model = SentenceTransformer(str(bundled_model_path()), device=device, local_files_only=True)
        self.encode(["warm up the model"], 1)

    def encode(self, texts: list[str], batch_size: int) -> Any:
        return self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)
