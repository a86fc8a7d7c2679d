"""Write ``names.jsonl``: English first names with their list, for conditioned generation.

Reads the shared ``female.txt`` and ``male.txt`` (one name a line) and writes one JSON
object a line, ``{"text": name, "label": "female" | "male"}``, the female list first, each
list in its source order. A name on both lists appears twice, once with each label. Run
from the repository root::

    python data/names/prepare.py [../shared/data/names]
"""

import json
import sys
from pathlib import Path

source = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/names")
with (Path(__file__).parent / "names.jsonl").open("w", encoding="utf-8") as out:
    for label in ("female", "male"):
        for line in (source / f"{label}.txt").read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.write(json.dumps({"text": line.strip(), "label": label}, ensure_ascii=False) + "\n")
