"""Maintainer tool: copy the benchmark files into the package as gzip, with their licences and provenance.

    python tools/pack_datasets.py SOURCE_DIR

SOURCE_DIR holds ``gsm8k/``, ``math500/`` and ``svamp/`` as published (see
``rankguide_edge/data/provenance.json`` for the files and where they come from). The gzip streams carry no
name or time stamp, so packing the same sources again gives byte-identical files. Writes are atomic (a
temporary name, then a rename). Not installed with the package; the package only reads what this writes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

from rankguide_edge.files import write_bytes_atomic  # the installed package (pip install .)

OUT = Path(__file__).resolve().parents[1] / "rankguide_edge" / "data"

#: file under SOURCE_DIR -> (licence file, upstream, licence name)
SOURCES = {
    "gsm8k/train.jsonl": ("gsm8k/LICENSE", "https://github.com/openai/grade-school-math", "MIT (OpenAI 2021)"),
    "gsm8k/test_public.jsonl": ("gsm8k/LICENSE", "https://github.com/openai/grade-school-math",
                                "MIT (OpenAI 2021)"),
    "math500/test_public.jsonl": ("math500/LICENSE", "https://github.com/openai/prm800k", "MIT (OpenAI 2023)"),
    "svamp/SVAMP.json": ("svamp/LICENSE", "https://github.com/arkilpatel/SVAMP", "MIT (Arkil Patel 2021)"),
}

NOTE = ("Benchmark files shipped inside rankguide-edge, gzip-compressed and otherwise unchanged. `sha256` is "
        "that of the source file (the uncompressed bytes), `gz_sha256` that of the packaged file; `records` "
        "counts non-blank JSONL lines or JSON-array items. The GSM8K and MATH500 `test_public` files are the "
        "subsets this project was given (some test problems are held back for independent evaluation; an `id` "
        "field was added): report results on them by file name and count. Each folder holds the upstream "
        "licence. Regenerate with `python tools/pack_datasets.py SOURCE_DIR`.")


def _records(raw: bytes, name: str) -> int:
    if name.endswith(".json"):
        return len(json.loads(raw))
    return sum(1 for line in raw.splitlines() if line.strip())


def main(source: Path) -> None:
    entries = {}
    for rel, (lic, url, licence) in SOURCES.items():
        raw = (source / rel).read_bytes()
        dest = OUT / (rel + ".gz")
        dest.parent.mkdir(parents=True, exist_ok=True)
        packed = gzip.compress(raw, compresslevel=9, mtime=0)
        write_bytes_atomic(dest, packed)
        lic_dest = OUT / lic
        write_bytes_atomic(lic_dest, (source / lic).read_bytes())
        entries[rel + ".gz"] = {"source": rel, "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
                                "gz_sha256": hashlib.sha256(packed).hexdigest(), "gz_bytes": len(packed),
                                "records": _records(raw, rel), "licence": licence, "licence_file": lic,
                                "upstream": url}
    doc = {"note": NOTE, "files": entries}
    write_bytes_atomic(OUT / "provenance.json", (json.dumps(doc, indent=2) + "\n").encode())
    for name, e in entries.items():
        print(f"{name}: {e['records']} records, {e['bytes']} -> {e['gz_bytes']} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python tools/pack_datasets.py SOURCE_DIR (the folder holding gsm8k/, math500/, svamp/)")
    main(Path(sys.argv[1]))
