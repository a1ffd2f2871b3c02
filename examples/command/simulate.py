#!/usr/bin/env python3
"""A stand-in for a non-Python simulation code: reads params as JSON on stdin,
prints log lines, then the result as a JSON object on the last line of stdout."""

import json
import math
import sys

params = json.load(sys.stdin)
a, b = float(sys.argv[2]), float(sys.argv[4])
if a < 0:
    print("negative amplitude is not physical", file=sys.stderr)
    sys.exit(3)
print(f"simulating a={a} b={b} seed={params['seed']}")
print(json.dumps({"energy": a * a + math.sin(b), "steps": int(10 * a) + 1}))
