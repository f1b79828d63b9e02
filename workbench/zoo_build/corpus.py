"""The zoo's training corpus: five domains with provenance and a held-out split.

Domains:

- ``code``: Python standard-library source of the running interpreter (``sysconfig`` stdlib path).
- ``english``, ``russian``, ``chinese``: Debian fortune packages (``fortunes``, ``fortunes-min``,
  ``fortunes-ru``, ``fortunes-zh``), fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``.
- ``arithmetic``: synthetic expressions with their values (``12 + 7 * 3 = 33``), seeded.

Documents (a fortune, a source file, an expression) are split into train / held-out by a hash of their
text, so the split does not depend on order. The corpus is rebuilt on demand and not committed; a small
held-out sample per domain is committed with the zoo (``workbench/zoo/heldout/``, read by
:mod:`workbench.zoo.heldout`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

FORTUNE_PACKAGES: tuple[str, ...] = ("fortunes", "fortunes-min", "fortunes-ru", "fortunes-zh")
CHINESE_FILES = ("chinese", "tang300", "song100")
SKIP_ENGLISH = ("art", "ascii-art", *CHINESE_FILES)
HELDOUT_SHARE = 0.05
ANSI = re.compile(r"\x1b\[[0-9;]*m|.\x08")


@dataclass(frozen=True)
class Corpus:
    """Per-domain lists of documents, split into train and held-out, plus provenance."""

    train: dict[str, list[str]]
    heldout: dict[str, list[str]]
    provenance: dict[str, object]


def _is_heldout(text: str) -> bool:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELDOUT_SHARE


def _fortunes(path: Path) -> list[str]:
    text = ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
    return [doc.strip() for doc in text.split("\n%\n") if doc.strip()]


def fetch_fortunes(workdir: Path) -> tuple[Path, dict[str, str]]:
    """Download and unpack the fortune packages; return the fortunes directory and package versions."""
    debs = workdir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *FORTUNE_PACKAGES], cwd=debs, check=True, capture_output=True)
    versions = {}
    for deb in sorted(debs.glob("*.deb")):
        fields = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Package", "Version"], check=True, capture_output=True, text=True
        ).stdout.split("\n")
        versions[fields[0].split(": ")[1]] = fields[1].split(": ")[1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "root")], check=True)
    return workdir / "root/usr/share/games/fortunes", versions


def arithmetic_documents(n: int, seed: int) -> list[str]:
    """``n`` lines of small integer expressions with their values."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        terms = [str(rng.randint(0, 99)) for _ in range(rng.randint(2, 4))]
        ops = [rng.choice("+-*") for _ in terms[1:]]
        expr = terms[0] + "".join(f" {op} {t}" for op, t in zip(ops, terms[1:], strict=True))
        docs.append(f"{expr} = {eval(expr)}")
    return docs


def code_documents(max_bytes: int) -> list[str]:
    """Stdlib source files (sorted, capped at ``max_bytes`` in total)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if total + len(text) > max_bytes:
            break
        docs.append(text)
        total += len(text)
    return docs


def build_corpus(max_bytes_per_domain: int = 2_000_000, seed: int = 0, workdir: Path | None = None) -> Corpus:
    """Fetch and split every domain.

    Args:
        max_bytes_per_domain: Cap on each domain's text (documents beyond it are dropped).
        seed: Seed of the synthetic domain.
        workdir: Where the packages are downloaded and unpacked (a temporary directory by default).
    """
    with tempfile.TemporaryDirectory() as tmp:
        fortune_dir, versions = fetch_fortunes(Path(workdir or tmp))
        english = [
            doc
            for path in sorted(fortune_dir.iterdir())
            if path.is_file() and not path.suffix and path.name not in SKIP_ENGLISH
            for doc in _fortunes(path)
        ]
        russian = [doc for path in sorted((fortune_dir / "ru").iterdir()) for doc in _fortunes(path)]
        chinese = [doc for name in CHINESE_FILES for doc in _fortunes(fortune_dir / name)]
    docs = {
        "code": code_documents(max_bytes_per_domain),
        "english": english,
        "russian": russian,
        "chinese": chinese,
        "arithmetic": arithmetic_documents(60_000, seed),
    }
    train: dict[str, list[str]] = {}
    heldout: dict[str, list[str]] = {}
    sizes: dict[str, dict[str, int]] = {}
    for domain, items in docs.items():
        kept, total = [], 0
        for doc in items:
            if total + len(doc) > max_bytes_per_domain:
                break
            kept.append(doc)
            total += len(doc)
        heldout[domain] = [d for d in kept if _is_heldout(d)]
        train[domain] = [d for d in kept if not _is_heldout(d)]
        sizes[domain] = {
            "train_docs": len(train[domain]),
            "train_chars": sum(map(len, train[domain])),
            "heldout_docs": len(heldout[domain]),
            "heldout_chars": sum(map(len, heldout[domain])),
        }
    provenance = {
        "packages": versions,
        "python_stdlib": f"Python {sys.version.split()[0]} ({sysconfig.get_paths()['stdlib']})",
        "arithmetic_seed": seed,
        "heldout_share": HELDOUT_SHARE,
        "max_chars_per_domain": max_bytes_per_domain,
        "sizes": sizes,
    }
    return Corpus(train, heldout, provenance)


def save_heldout_sample(corpus: Corpus, directory: Path, chars_per_domain: int = 20_000) -> None:
    """Commit-sized held-out sample: the first documents of each domain up to ``chars_per_domain``."""
    directory.mkdir(parents=True, exist_ok=True)
    for domain, docs in corpus.heldout.items():
        kept, total = [], 0
        for doc in docs:
            if total + len(doc) > chars_per_domain and kept:
                break
            kept.append(doc[:chars_per_domain])
            total += len(kept[-1])
        (directory / f"{domain}.json").write_text(json.dumps(kept, ensure_ascii=False, indent=0))
    (directory / "provenance.json").write_text(json.dumps(corpus.provenance, indent=2))
