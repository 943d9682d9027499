"""Word senses (issue 22): resolution rates on tests/data/ambiguous_words.json, the table's size, and
what a bundle with the table adds to a personalize.

Needs WordNet 3.0 (apt install wordnet-base) to build the table. Prints Markdown:
1. resolution alone and with context names (each miss listed), and how often a name moves off its
   first sense beside unrelated names (10 everyday pairs: "cat, dog", "car, bicycle", ...);
2. senses.json.gz bytes (and inflated), build time, first-use load time;
3. warm personalize (10 classes, names cached, one thread) with and without the table, alternating.

    OMP_NUM_THREADS=1 python benchmarks/senses.py --bundle /tmp/senses/bundle
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEUTRAL = ("cat, dog", "car, bicycle", "banana, orange", "chair, table", "tree, flower", "shoe, hat", "pizza, bread",
           "boat, airplane", "guitar, piano", "hammer, wrench")
PROMPT = "mouse, bat, crane, seal, goldfish, school bus, sneaker, pizza, umbrella, lemon"


def rates(table, cases: dict) -> None:
    from tina_edge.export.portable.senses import measure

    r = measure(table, cases)
    print(f"| alone | {r['alone']:.3f} ({round(r['alone'] * r['alone_n'])}/{r['alone_n']}) |")
    print(f"| with context names | {r['context']:.3f} ({round(r['context'] * r['context_n'])}/{r['context_n']}) |\n")
    print("misses:\n")
    for m in r["misses"]:
        print(f"- `{m['prompt']}`: expected {m['expected']}, read as {m['as']} ({m['got']})")
    moved, total = [], 0
    for e in cases["words"]:
        alone = table.resolve([e["word"]])[0].sense
        for n in NEUTRAL:
            if e["word"] in n.split(", "):
                continue
            total += 1
            r = table.resolve([e["word"], *n.split(", ")])[0]
            if r.sense is not alone:
                moved.append(f"`{e['word']}, {n}` -> {r.sense.text(r.word)}")
    print(f"\nbeside unrelated pairs: {len(moved)}/{total} prompts move the name off its first sense:\n")
    print("; ".join(moved))


def timing(bundle: Path, repeats: int) -> None:
    from tina_edge.runtime import Personalizer
    from tina_edge.runtime.manifest import read_manifest, write_manifest

    plain = Path(tempfile.mkdtemp()) / "plain"
    shutil.copytree(bundle, plain)
    m = read_manifest(plain)
    name, m.text_encoder.senses = m.text_encoder.senses, None
    m.files.pop(name)
    (plain / name).unlink()
    write_manifest(plain, m)
    data = (bundle / name).read_bytes()
    print(f"\n| file | bytes |\n|---|---|\n| {name} | {len(data):,} |\n| inflated JSON | {len(gzip.decompress(data)):,} |")
    ps = {"with senses": Personalizer.from_bundle(bundle, threads=1), "without": Personalizer.from_bundle(plain, threads=1)}
    t0 = time.perf_counter()
    ps["with senses"].novelty("mouse, cat")  # first use: reads and parses the table
    print(f"\nfirst use (read, inflate, parse the table; a novelty of 2 names): {(time.perf_counter() - t0) * 1000:.0f} ms")
    times: dict[str, list[float]] = {k: [] for k in ps}
    for p in ps.values():
        p.personalize(PROMPT)  # names cached
    for _ in range(repeats):
        for k, p in ps.items():
            t = time.perf_counter()
            p.personalize(PROMPT)
            times[k].append((time.perf_counter() - t) * 1000)
    print(f"\nwarm personalize, 10 classes (`{PROMPT}`), one thread, median of {repeats}:\n")
    print("| bundle | ms |\n|---|---|")
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v):.2f} |")
    from tina_edge.runtime.prompt import parse_classes

    table, names = ps["with senses"]._sense_table.table, parse_classes(PROMPT)
    res = []
    for _ in range(repeats):
        t = time.perf_counter()
        table.resolve(names)
        res.append((time.perf_counter() - t) * 1000)
    print(f"| resolving a new 10-name prompt (not cached; {sum(r is not None for r in table.resolve(names))} "
          f"ambiguous names) | {statistics.median(res):.2f} |")
    print(f"\nload average {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="a bundle with senses.json.gz (tina-edge convert)")
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--rates-only", action="store_true", help="skip the timings")
    a = ap.parse_args()
    from tina_edge.runtime.manifest import read_manifest
    from tina_edge.runtime.senses import SenseTable

    m = read_manifest(a.bundle)
    if not m.text_encoder.senses:
        raise SystemExit(f"{a.bundle} has no senses table; convert it where WordNet 3.0 is installed")
    table = SenseTable.from_bytes((a.bundle / m.text_encoder.senses).read_bytes())
    print(f"{len(table.words)} ambiguous nouns, {len(table.nouns)} context nouns\n\n| resolution | rate |\n|---|---|")
    rates(table, json.loads((ROOT / "tests/data/ambiguous_words.json").read_text()))
    # a second list, written after the first one's rates were known, before anything was measured on it
    print("\n| validation list (tests/data/ambiguous_words_validation.json) | rate |\n|---|---|")
    rates(table, json.loads((ROOT / "tests/data/ambiguous_words_validation.json").read_text()))
    if not a.rates_only:
        timing(a.bundle, a.repeats)


if __name__ == "__main__":
    main()
