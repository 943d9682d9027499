"""Encoding new class names, uncached: what a user pays the first time a name is typed.

`latency.py`'s warm personalize re-uses the text encoder's name cache (apps re-use their names); this
times `Personalizer.encode` on 10 names it has not encoded yet (a fresh slice of the bundle's training
vocabulary per repeat, the same slices for every bundle), alternating bundles in one process.

    OMP_NUM_THREADS=1 python benchmarks/encode_latency.py --bundle tina_edge/bundles/default --bundle /work/bundles/mpnet-prior
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tina_edge.runtime import Personalizer



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", required=True, help="a bundle directory (repeat to compare)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    tinas = {b: Personalizer.from_bundle(b, threads=1) for b in a.bundle}
    vocab = list(next(iter(tinas.values())).manifest.vocabulary)
    need = 10 * a.repeats * a.rounds
    if len(vocab) < need:
        raise SystemExit(f"the first bundle's vocabulary has {len(vocab)} names; {need} are needed (lower --repeats)")
    print("| bundle | round | encode 10 new names, median ms |\n|---|---|---|")
    for r in range(a.rounds):
        for b, tina in tinas.items():
            times = []
            for i in range(a.repeats):
                names = vocab[10 * (r * a.repeats + i): 10 * (r * a.repeats + i + 1)]
                t0 = time.perf_counter()
                tina.encode(names)
                times.append(time.perf_counter() - t0)
            print(f"| {b} | {r + 1} | {1000 * np.median(times):.1f} |", flush=True)


if __name__ == "__main__":
    main()
