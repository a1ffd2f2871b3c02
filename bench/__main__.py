"""``make bench``: run the benchmarks there are (so far: what isolation costs per item)."""

from __future__ import annotations

import sys

from bench import isolation

if __name__ == "__main__":
    sys.exit(isolation.main(sys.argv[1:]))
