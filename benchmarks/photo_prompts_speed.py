"""Speed and peak memory of photo prompts (issue 21): warm, one thread, 10 classes x 5 photos, in Python.

Times `Personalizer.personalize(classes, images={class: 5 photo files})` on the default bundle (trunk
passes included: each call decodes, preprocesses and runs the trunk over its 50 photos), next to the
names-only call and the trunk alone; the median of --repeats warm calls, wall clock and process CPU
time (on a shared, loaded machine the CPU time is the closer figure for a core of one's own). `--rss` prints only the
process's peak RSS after one such call (run it in a fresh process: /usr/bin/time -v gives the same).

    OMP_NUM_THREADS=1 python benchmarks/photo_prompts_speed.py --tiny /tmp/tinyimagenet/tiny-imagenet-200
    OMP_NUM_THREADS=1 /usr/bin/time -v python benchmarks/photo_prompts_speed.py --tiny ... --rss
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLASSES = ["goldfish", "lemon", "teapot", "school bus", "monarch", "pizza", "koala", "barn", "Chihuahua", "umbrella"]


def photo_files(root: Path, n: int = 5) -> dict[str, list[str]]:
    wnids, words = set((root / "wnids.txt").read_text().split()), {}
    for line in (root / "words.txt").read_text().splitlines():
        w, _, v = line.partition("\t")
        if w in wnids:
            words[v.split(",")[0].strip()] = w
    return {c: [str(f) for f in sorted((root / "train" / words[c] / "images").iterdir())[:n]] for c in CLASSES}


def main() -> None:
    from tina_edge.runtime import Personalizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rss", action="store_true")
    ap.add_argument("--bundle", default=None, help="bundle directory (default: the embedded one)")
    a = ap.parse_args()
    images = photo_files(a.tiny)
    p = Personalizer.from_bundle(a.bundle, threads=1)
    if a.rss:  # what an app does: make the model and serialise it (as test_memory.py measures)
        p.personalize(CLASSES, images=images).to_bytes()
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6:.1f} MB "
              f"(torch imported: {'torch' in sys.modules})")
        return
    from tina_edge.runtime.photo_prompts import BATCH, featurizer

    fz = featurizer(p)
    only = {c: images[c] for c in CLASSES}
    files = sum(images.values(), [])
    pix = fz.prepared(files)
    rows = {}
    batches = []
    for bs in (1, 2, 4, 8, 16, 50):
        def run(bs=bs):
            fz.batch = bs
            fz.run(pix)
        batches.append((f"trunk runs only, 50 prepared photos, batch {bs}", run))
    for label, fn in [("names only", lambda: p.personalize(CLASSES)),
                      ("decode + prepare only, 50 photo files", lambda: fz.prepared(files)),
                      ("trunk alone: 50 photos decoded, prepared, featurized", lambda: fz.features(sum(images.values(), []))),
                      ("name + 5 photos per class (10 x 5)", lambda: p.personalize(CLASSES, images=images)),
                      ("photos only, 10 x 5", lambda: p.personalize(CLASSES, images=only, photos_only=True)),
                      *batches]:  # last: they change fz.batch
        fn()  # warm
        ts, cpu = [], []
        for _ in range(a.repeats):
            t, c = time.perf_counter(), time.process_time()
            fn()
            ts.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        rows[label] = (ts, cpu)
    fz.batch = BATCH
    print("| call (warm, 1 thread) | median wall ms | min wall ms | median CPU ms |\n|---|---|---|---|")
    for k, (ts, cpu) in rows.items():  # CPU time: what the call costs when it has the core to itself
        print(f"| {k} | {statistics.median(ts):.0f} | {min(ts):.0f} | {statistics.median(cpu):.0f} |")


if __name__ == "__main__":
    main()
