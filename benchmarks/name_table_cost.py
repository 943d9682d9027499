"""What a name table costs a personalize (issue 22): peak RSS and warm time of a fresh runtime-only process.

Per bundle, in its own process (torch never imported): open the bundle, personalize 10 names (two of
them, narwhal and parking meter, outside the vocabulary: read from a name table when the bundle has
one), record VmHWM, then time 201 warm personalizes of the same names (one thread) and print the median.

    OMP_NUM_THREADS=1 python benchmarks/name_table_cost.py tina_edge/bundles/default /tmp/previous-default
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEFAULT = str(Path(__file__).resolve().parents[1] / "tina_edge/bundles/default")

NAMES = "narwhal, parking meter, goldfish, tabby, umbrella, seashore, school bus, lemon, pizza, koala"

CHILD = """
import sys, time
from tina_edge.runtime import Personalizer
p = Personalizer.from_bundle(sys.argv[1], threads=1)
p.personalize(sys.argv[2])
hwm = int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) * 1024
ts = []
for _ in range(201):
    t = time.perf_counter(); p.personalize(sys.argv[2]); ts.append(time.perf_counter() - t)
ts.sort()
print(p.manifest.bundle_id, bool(p.manifest.text_encoder.name_table), hwm, 1000 * ts[100], 1000 * ts[0], 'torch' in sys.modules)
"""


def main(bundles: list[str]) -> None:
    print("| bundle | name table | peak RSS (MB) | warm personalize, 10 cached names: median / fastest (ms) | torch imported |")
    print("|---|---|---|---|---|")
    for b in bundles:
        out = subprocess.run([sys.executable, "-c", CHILD, b, NAMES], capture_output=True, text=True, check=True).stdout.split()
        bid, table, hwm, med, fast, torch = out
        print(f"| {bid} | {table} | {int(hwm) / 1e6:.1f} | {float(med):.2f} / {float(fast):.2f} | {torch} |")


if __name__ == "__main__":
    main(sys.argv[1:] or [DEFAULT])
