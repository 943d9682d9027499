"""Another spelling of a name the bundle knows: a plural, or one word written as two or two as one.

Why: people type "sneakers", "mashed potatoes", "payphone" and "lawnmower" where the bundle knows
"sneaker", "mashed potato", "pay-phone" and "lawn mower". The encoder reads such a spelling as a
weaker, vaguer text than the name it knows, so the prior gives it a weaker row (BENCHMARKS §25).
Only a text that matches nothing the bundle knows is re-spelled, and only onto a name it knows: a
class key that is a known name is never changed, so every known name and every other text reads
exactly as before. The JS twin is js/src/spellings.mjs (same rules, same order).

The rules, tried in this order, the first hit wins:
1. the last word made singular by WordNet's own detachment rules for nouns (morphy: "-ses" -> "-s",
   "-xes" -> "-x", "-zes" -> "-z", "-ches" -> "-ch", "-shes" -> "-sh", "-men" -> "-man",
   "-ies" -> "-y", "-s" -> ""), then "-oes" -> "-o" (WordNet lists those plurals as exceptions);
2. the key without its spaces (class keys have "-" and "_" folded to spaces already) against the
   known names without theirs, then the same for each singular of rule 1.
Known names are looked up in the order they were given (the vocabulary first); the first name
to claim a spelling keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable

# WordNet 3.0 morphy's noun detachments (wn morph.c), then "-oes" -> "-o", the pattern of 109 of
# WordNet's noun exceptions (noun.exc: "potatoes potato", "heroes hero") that no detachment reaches
NOUN_SUFFIXES = (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
                 ("ies", "y"), ("s", ""), ("oes", "o"))


def singulars(key: str) -> list[str]:
    """The class key with its last word made singular by each detachment rule that applies, in rule order."""
    head, sep, last = key.rpartition(" ")
    out: list[str] = []
    for suffix, ending in NOUN_SUFFIXES:
        word = last[: -len(suffix)] + ending if last.endswith(suffix) else ""
        if word and (s := head + sep + word) not in out:  # "s" alone is no plural; "men" is "man"'s
            out.append(s)
    return out


def joined(key: str) -> str:
    """The class key with its spaces removed: "lawn mower" and "lawnmower" meet here."""
    return key.replace(" ", "")


class Spellings:
    """Known class keys and their space-free forms; `find` maps a typed key to the known key it spells."""

    def __init__(self, known: Iterable[str]):
        self.known: set[str] = set()
        self.joined: dict[str, str] = {}
        for k in known:
            self.known.add(k)
            self.joined.setdefault(joined(k), k)

    def find(self, key: str) -> str | None:
        """The known key that `key` is another spelling of, or None (also for a key that is known itself:
        a known name is never re-spelled)."""
        if key in self.known or "(" in key:
            return None
        forms = singulars(key)
        for s in forms:
            if s in self.known:
                return s
        for s in [key, *forms]:
            hit = self.joined.get(joined(s))
            if hit is not None:
                return hit
        return None
