"""Build benchmarks/data/everyday_words.json: the words people use for each class of the universe.

For every class of the default bundle's universe (manifest training.classes: Tiny-ImageNet's 202,
CIFAR-10, Fashion-MNIST) the candidates are, from WordNet 3.0 (/usr/share/wordnet):
- the synset's own lemmas (not Latin binomials, not the name itself);
- short forms: the head noun of a multi-word name when one of its noun senses is the class's synset
  or one of its hypernyms ("school bus" -> "bus", "computer keyboard" -> "keyboard");
- hypernym common names: lemmas of the first two hypernym levels whose most frequent noun sense is
  that hypernym and which occur in WordNet's sense-tagged corpus (index.noun tag count > 0), minus a
  stop list of abstract words ("organism", "device", ...);
- a short hand-checked list (HAND) of colloquial words WordNet lacks or ranks low ("kitty", "tee").

A word is dropped when it is any class's name, a WordNet lemma of another class, or a candidate for
two classes (it would not say which one is meant). Split, fixed: words the bundle already trained on
(manifest training.synonyms or training.vocabulary) go to "train"; the rest are ordered by
sha1(class|word) and alternate held-out / train, so a class with one new word has it held out.
Held-out classes' words are all "heldout" (never fitted on, like their names).

    python benchmarks/everyday_words_build.py --tin-words /tmp/tinyimagenet/tiny-imagenet-200
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tina_edge.runtime.atomic import atomic_write_text  # noqa: E402
from tina_edge.train.text.phrasings import FALLBACK_WNIDS, WordNet, key  # noqa: E402

OUT = ROOT / "benchmarks" / "data" / "everyday_words.json"
KEYS = ROOT / "tina_edge" / "export" / "portable" / "everyday_keys.json"  # the training part only, shipped

STOP = {"entity", "physical entity", "object", "whole", "unit", "artifact", "artefact", "instrumentality",
        "instrumentation", "device", "container", "structure", "construction", "organism", "being", "animal",
        "animate being", "beast", "brute", "creature", "fauna", "matter", "substance", "food", "nutrient",
        "covering", "commodity", "equipment", "implement", "vertebrate", "invertebrate", "placental", "mammal",
        "chordate", "arthropod", "insect", "person", "individual", "someone", "somebody", "mortal", "soul",
        "thing", "material", "stuff", "solid", "part", "piece", "area", "region", "location", "place",
        "system", "article", "ware", "product", "production", "merchandise", "good", "goods", "conveyance",
        "transport", "vehicle", "craft", "wheeled vehicle", "self-propelled vehicle", "motor vehicle",
        "instrument", "tool", "means", "way", "form", "shape", "kind", "sort", "type", "group", "collection",
        "plant", "flora", "produce", "edible fruit", "fruit", "vegetable", "dish", "course", "nutriment",
        "foodstuff", "food product", "carnivore", "herbivore", "ruminant", "ungulate", "primate", "canine",
        "feline", "rodent", "reptile", "amphibian", "crustacean", "mollusk", "mollusc", "shellfish", "bird",
        "passerine", "gastropod", "arachnid", "decapod", "worker", "adult", "expert", "clothing", "garment",
        "wear", "apparel", "dress", "clothes", "article of clothing", "vesture", "wearable", "habiliment",
        "home appliance", "appliance", "durables", "consumer goods", "mechanism", "machine", "apparatus",
        "furniture", "furnishing", "piece of furniture", "article of furniture", "vessel", "shape",
        "geological formation", "formation", "natural elevation", "elevation", "land", "ground", "body",
        "point", "top", "cover", "signal", "sign", "support", "surface", "facility", "installation",
        "establishment", "shop", "store", "building", "edifice", "room", "obstruction", "barrier",
        "protective covering", "headdress", "headgear", "footwear", "footgear", "bottle", "box", "case", "bag",
        "fish", "dog", "cat", "horse", "frog", "ship", "truck", "deer", "boat", "car", "coat", "shirt",
        "aquatic vertebrate", "game", "game equipment", "ball", "sports equipment", "toy", "public transport",
        "sweet", "confection", "beverage", "drink", "baked goods", "bread", "ingredient", "flavorer"}

REJECT = {  # hand-checked: hypernyms and lemmas nobody would type for the class's photos
    "entanglement", "trap", "ridge", "lodging", "dwelling house", "housing", "dwelling", "associate", "participant",
    "publication", "public press", "magazine", "stereo", "hand tool", "lamp", "rod", "jar", "gate", "tower",
    "farm building", "roof", "fencing", "cows", "oxen", "cracker", "railroad train", "wheel", "true cat",
    "constrictor constrictor", "cart", "musical instrument", "machine", "board", "drop", "bullet", "painter",
}

HAND = {  # hand-checked colloquial words; each is what a person would type for the class's photos
    "cat": ["kitty", "kitten", "pussycat", "moggy"], "dog": ["puppy", "doggy", "pup", "hound", "pooch"],
    "airplane": ["plane", "aeroplane", "jet", "airliner", "aircraft"], "automobile": ["car", "auto", "motorcar"],
    "ship": ["boat", "vessel", "freighter", "liner"], "truck": ["lorry", "big rig", "semi truck"],
    "deer": ["stag", "doe", "fawn", "buck"], "frog": ["toad", "froggy"], "horse": ["pony", "stallion", "mare"],
    "bird": ["birdie", "songbird"], "T-shirt/top": ["tee", "t-shirt", "tee shirt", "top", "tshirt"],
    "trouser": ["pants", "trousers", "slacks", "jeans"], "pullover": ["sweater", "jumper", "sweatshirt"],
    "dress": ["frock", "gown", "sundress"], "coat": ["jacket", "overcoat", "parka"],
    "shirt": ["button-down shirt", "dress shirt", "blouse"], "sneaker": ["trainer", "running shoe", "tennis shoe", "sneakers"],
    "bag": ["handbag", "purse", "tote bag", "shoulder bag"], "ankle boot": ["boot", "bootie", "chelsea boot"],
    "hog": ["pig", "piggy", "swine"], "cougar": ["puma", "mountain lion"], "Arabian camel": ["camel"],
    "lesser panda": ["red panda"], "ice lolly": ["popsicle", "ice pop"], "pop bottle": ["soda bottle"],
    "cash machine": ["atm", "cash point"], "pay-phone": ["payphone", "phone booth"], "jinrikisha": ["rickshaw"],
    "teddy": ["teddy bear"], "mashed potato": ["mash", "mashed potatoes"], "go-kart": ["kart"],
    "gasmask": ["gas mask"], "CD player": ["cd player"], "cockroach": ["roach"], "ladybug": ["ladybird"],
    "sports car": ["sportscar"], "lawn mower": ["lawnmower", "mower"], "refrigerator": ["fridge"],
    "remote control": ["remote", "clicker"], "sunglasses": ["shades", "sunnies"], "bikini": ["two-piece"],
    "Chihuahua": ["chihuahua dog"], "Yorkshire terrier": ["yorkie"], "golden retriever": ["golden"],
    "Labrador retriever": ["labrador", "lab"], "German shepherd": ["alsatian"], "standard poodle": ["poodle"],
    "Persian cat": ["persian"], "tabby": ["tabby cat"], "ox": ["bull", "steer"], "bison": ["buffalo"],
    "orange": ["mandarin"], "pizza": ["pizza pie"], "espresso": ["coffee"], "limousine": ["limo"],
    "binoculars": ["field glasses"], "swimming trunks": ["swim shorts", "bathing trunks"],
    "police van": ["paddy wagon", "police car"], "moving van": ["removal van"], "iPod": ["mp3 player"],
    "miniskirt": ["mini skirt", "mini"], "bow tie": ["bowtie", "dickie bow"],
}


def wordnet_graph(wn: WordNet) -> tuple[dict[str, list[str]], dict[str, int], dict[str, list[str]]]:
    """Hypernym pointers per synset, tag counts per word, and noun senses per word (in order)."""
    hyper: dict[str, list[str]] = {}
    with open(wn.root / "data.noun", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):
                continue
            parts = line.partition(" | ")[0].split()
            n = int(parts[3], 16)
            i = 4 + 2 * n
            hyper["n" + parts[0]] = [
                "n" + parts[i + 1 + 4 * j + 1] for j in range(int(parts[i]))
                if parts[i + 1 + 4 * j] in ("@", "@i") and parts[i + 1 + 4 * j + 2] == "n"]
    tags, senses = {}, {}
    with open(wn.root / "index.noun", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):
                continue
            parts = line.split()
            p_cnt = int(parts[3])
            tags[key(parts[0])] = int(parts[5 + p_cnt])
            senses[key(parts[0])] = ["n" + o for o in parts[6 + p_cnt :]]
    return hyper, tags, senses


def candidates(name: str, wnid: str | None, wn: WordNet, graph) -> dict[str, str]:
    """word -> where it came from, for one class."""
    hyper, tags, senses = graph
    out: dict[str, str] = {}
    s = wn.synset(wnid) if wnid else None
    if s:
        for w in s.words:
            if not wn.is_binomial(w) and key(w) != key(name) and wn.is_primary_sense(w, wnid):
                out.setdefault(w, "lemma")
    ancestors, frontier = [], [wnid] if wnid else []
    for level in range(6):
        frontier = [h for x in frontier for h in hyper.get(x, [])]
        ancestors += [(level, h) for h in frontier]
    up = {h for _, h in ancestors} | ({wnid} if wnid else set())
    head = key(name).split()[-1] if len(key(name).split()) > 1 else None
    if head and head not in STOP and any(x in up for x in senses.get(head, [])):
        out.setdefault(head, "short form")
    for level, h in ancestors:
        if level > 1:
            continue
        for w in wn.synset(h).words:
            k = key(w)
            if k in STOP or wn.is_binomial(w) or len(k.split()) > 2 or tags.get(k, 0) == 0:
                continue
            if wn.is_primary_sense(w, h):
                out.setdefault(w.lower(), "hypernym")
    for w in HAND.get(name, []):
        out.setdefault(w, "hand")
    firsts: dict[str, str] = {}
    for w in out:  # one spelling per word ("ATM" / "atm")
        firsts.setdefault(key(w), w)
    return {w: out[w] for w in firsts.values() if key(w) not in REJECT}


def tin_wnids(root: Path) -> dict[str, str]:
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()]
    out = {}
    for line in (root / "words.txt").read_text(encoding="utf-8").splitlines():
        w, _, n = line.partition("\t")
        if w in wnids:
            out[n.split(",")[0].strip()] = w
    return out


def build(manifest: dict, wnids: dict[str, str], wn: WordNet) -> dict:
    t = manifest["training"]
    classes, hold = t["classes"], set(t["holdout_classes"])
    trained = {key(w) for ws in t.get("synonyms", {}).values() for w in ws} | {key(v) for v in t.get("vocabulary", [])}
    graph = wordnet_graph(wn)
    ids = {c: wnids.get(c) or FALLBACK_WNIDS.get(key(c)) for c in classes}
    cand = {c: candidates(c, ids[c], wn, graph) for c in classes}
    names = {key(c) for c in classes}
    lemma_of = {}
    for c in classes:
        s = wn.synset(ids[c]) if ids[c] else None
        for w in (s.words if s else []) + t.get("synonyms", {}).get(c, []):
            lemma_of.setdefault(key(w), set()).add(c)
    count: dict[str, int] = {}
    for c in classes:
        for w in {key(x) for x in cand[c]}:
            count[w] = count.get(w, 0) + 1
    out = []
    for c in classes:
        words = [(w, src) for w, src in cand[c].items()
                 if key(w) not in names and lemma_of.get(key(w), {c}) <= {c} and count[key(w)] == 1
                 and not re.search(r"[()]", w)]
        train, held = [], []
        fresh = sorted((x for x in words if key(x[0]) not in trained),
                       key=lambda x: hashlib.sha1(f"{c}|{key(x[0])}".encode()).hexdigest())
        for i, (w, src) in enumerate(fresh):
            (held if (c in hold or i % 2 == 0) else train).append({"word": w, "source": src})
        for w, src in words:
            if key(w) in trained:
                (held if c in hold else train).append({"word": w, "source": src + ", trained"})
        out.append({"class": c, "wnid": ids[c], "holdout_class": c in hold, "train": train, "heldout": held})
    return {"about": __doc__.split("\n\n")[0], "wordnet": "3.0", "classes": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=ROOT / "tina_edge/bundles/default/manifest.json")
    ap.add_argument("--tin-words", type=Path, required=True, help="tiny-imagenet-200 folder (wnids.txt, words.txt)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    data = build(json.loads(a.manifest.read_text()), tin_wnids(a.tin_words), WordNet())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    keys = {c["class"]: [w["word"] for w in c["train"]] for c in data["classes"] if not c["holdout_class"] and c["train"]}
    about = ("Everyday words of seen classes, the TRAINING part of benchmarks/data/everyday_words.json "
             "(written by benchmarks/everyday_words_build.py; never a held-out class or a held-out word): "
             "extra text-prior keys added by export/portable/everyday_keys.py.")
    atomic_write_text(KEYS, json.dumps({"about": about, "words": keys}, indent=1, ensure_ascii=False) + "\n")
    cl = data["classes"]
    seen = [c for c in cl if not c["holdout_class"]]
    print(f"{len(cl)} classes; seen classes: {sum(len(c['train']) for c in seen)} train words, "
          f"{sum(len(c['heldout']) for c in seen)} held-out words ({sum(1 for c in seen if c['heldout'])} classes); "
          f"held-out classes: {sum(len(c['heldout']) for c in cl if c['holdout_class'])} words")


if __name__ == "__main__":
    main()
