"""``make bench``: ``python -m bench`` (see :mod:`bench.harness`; ``python -m bench.isolation``
measures what isolating items costs on its own)."""

from __future__ import annotations

import sys

from bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
