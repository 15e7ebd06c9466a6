"""Which datatype is a subtype of which: Galaxy's datatype class tree, by extension.

Galaxy decides whether a dataset may go into a data input by class inheritance: an input
declaring ``tabular`` takes ``tabular`` and every subclass (``interval``, ``bed``, ``sam``,
``vcf`` …) but not ``txt``, its parent; ``data`` is the root and takes everything. The
table below mirrors the classes of Galaxy's common datatypes (``csv`` and ``tsv`` derive
from Galaxy's TabularData, not from Tabular, so ``tabular`` inputs refuse them as Galaxy
does). An extension not in the table is a direct child of ``data``: it matches only itself
and ``data``.
"""

from __future__ import annotations

import functools

ROOT = "data"
# Extensions a dataset has before its format is known (sniffed when its upload finishes).
PENDING = frozenset({"auto", "_sniff_", ""})

PARENTS: dict[str, str] = {
    "txt": "data",
    "binary": "data",
    "image": "data",
    # text
    "tabular": "txt",
    "csv": "txt",
    "tsv": "txt",
    "json": "txt",
    "xml": "txt",
    "html": "txt",
    "yaml": "txt",
    "newick": "txt",
    "maf": "txt",
    "sequence": "txt",
    "svg": "xml",
    # tabular
    "interval": "tabular",
    "sam": "tabular",
    "vcf": "tabular",
    "pileup": "tabular",
    "wig": "tabular",
    "gff": "tabular",
    "taxonomy": "tabular",
    "gff3": "gff",
    "gtf": "gff",
    "bed": "interval",
    "bedgraph": "interval",
    "bedstrict": "bed",
    "bed6": "bed",
    "bed12": "bed",
    # sequences
    "fasta": "sequence",
    "fastq": "sequence",
    "fastqsanger": "fastq",
    "fastqillumina": "fastq",
    "fastqsolexa": "fastq",
    "fastqcssanger": "fastq",
    # binary
    "bam": "binary",
    "zip": "binary",
    "sqlite": "binary",
    "h5": "binary",
    "png": "image",
    "jpg": "image",
    "pdf": "image",
}


@functools.lru_cache(maxsize=1024)
def lineage(extension: str) -> tuple[str, ...]:
    """The extension and its ancestors up to ``data`` (an unknown extension: itself, then data)."""
    chain = [extension]
    seen = {extension}
    current = extension
    while current != ROOT:
        current = PARENTS.get(current, ROOT)
        if current in seen:  # a cycle in the table would be a bug; never loop on it
            break
        chain.append(current)
        seen.add(current)
    return tuple(chain)


def is_subtype(extension: str, of: str) -> bool:
    """Whether ``extension`` is ``of`` or one of its subtypes (everything is a subtype of data)."""
    return of in lineage(extension)


def is_pending(extension: str | None) -> bool:
    """Whether a dataset's format is not known yet (an upload still to be sniffed)."""
    return extension is None or extension in PENDING


@functools.lru_cache(maxsize=4096)
def accepts(formats: tuple[str, ...], extension: str) -> bool:
    """Whether an input declaring ``formats`` takes a dataset of ``extension`` (Galaxy's rule)."""
    if not formats or ROOT in formats:
        return True
    return any(ancestor in formats for ancestor in lineage(extension))
