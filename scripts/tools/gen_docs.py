"""Write the generated documentation: docs/experiment-yaml.md, from the experiment schema.

``.venv/bin/python scripts/tools/gen_docs.py`` rewrites the file; with ``--check`` it changes
nothing and exits 1 if the file is out of date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safebench.schema.specdoc import GENERATE, experiment_reference

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / "docs" / "experiment-yaml.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="only report whether the file is up to date"
    )
    args = parser.parse_args(argv)
    text = experiment_reference()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else None
    if args.check:
        if current != text:
            print(f"{TARGET.relative_to(REPO)} is out of date: run {GENERATE}")
            return 1
        print(f"{TARGET.relative_to(REPO)} is up to date")
        return 0
    if current != text:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(REPO)}")
    else:
        print(f"{TARGET.relative_to(REPO)} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
