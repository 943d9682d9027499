"""Turning a user's class prompt into a clean list of class names, and what makes two names one class.

Rules (each failure is one PromptError sentence; the rules are data below so ports can copy them):
- Input is one string "dog, cat" or a sequence of strings, each of which may itself hold names
  separated by any of SEPARATORS: the ASCII comma and the other scripts' commas ("，", "、", "﹐", "､", ...).
- Each name is NFKC-normalised (fullwidth "ｄｏｇ" is "dog", "ﬁsh" is "fish"), control characters
  (Unicode category Cc, e.g. NUL, ESC, DEL) and the other invisible format characters (category Cf:
  soft hyphen, ...; plus the invisible "filler" letters) are dropped, any run of whitespace becomes
  one space, and the ends are stripped. Emoji, accents and any script are kept as written.
- Refused: REFUSED_CHARACTERS (bidirectional controls, which make a label display as something
  else, and zero-width characters, which hide a difference); ZWJ/ZWNJ only where they join two
  characters outside the Latin, Greek and Cyrillic alphabets (emoji sequences, Indic and Persian
  spelling); a name that is empty or has nothing visible after cleaning.
- Refused: a word mixing letters of CONFUSABLE_SCRIPTS ("cаt" with a Cyrillic а), and two names that
  only differ by look-alike letters (their `skeleton`s are equal: "cat" and "сat").
- Names longer than MAX_NAME_CHARS characters are truncated (the text encoder only reads a few
  dozen tokens anyway); truncation happens before the duplicate check.
- Refused: an empty prompt, an empty name between commas (the position is named), two names that
  are one class (`class_key`: NFKC, case-folded, "_", "-" and whitespace are one space), and text
  that is not valid UTF-8 (undecodable command-line bytes arrive as lone surrogates).
- A name may end in a qualifier in parentheses that picks one of its senses: "mouse (rodent)",
  "crane (bird)" (runtime/senses.py). Its class key writes it with one space before "(" and none
  inside: "Mouse(Rodent)" and "mouse ( rodent )" are one class, "mouse (rodent)"; `split_qualifier`
  gives the keys of the name and of the qualifier. Refused: a name whose parentheses do not pair up
  ("mouse (rodent, small)" splits at its comma into "mouse (rodent" and "small)").
`class_key` is the one notion of class identity: duplicates here, evaluate's class folders, the
classes that descriptions and example images name, and every CLI option that names a class.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from .errors import PromptError

MAX_NAME_CHARS = 200
MAX_PROMPT_CHARS = 100_000  # a whole prompt; at most 1000 names (runtime/groups.py MAX_CLASSES) anyway
MAX_DESCRIPTION_CHARS = 1000
# Class-name separators: the ASCII comma and every other script's comma (NFKC folds some to ",").
SEPARATORS = (",", "\uff0c", "\u3001", "\ufe50", "\ufe51", "\uff64", "\ufe10", "\ufe11", "\u060c", "\u055d",
              "\u1363", "\u07f8", "\u2e41", "\ua4fe", "\ua60d", "\u1802", "\u1808")
# Refused in class names and descriptions: bidi controls (embeddings, overrides, isolates, marks) and
# zero-width characters (space, word joiner, BOM / zero-width no-break space, Mongolian vowel separator).
BIDI_CONTROLS = ("\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
                 "\u200e", "\u200f", "\u061c")
ZERO_WIDTH = ("\u200b", "\u2060", "\ufeff", "\u180e")
REFUSED_CHARACTERS = BIDI_CONTROLS + ZERO_WIDTH
JOINERS = ("\u200c", "\u200d")  # ZWNJ, ZWJ: kept only between two characters outside CONFUSABLE_SCRIPTS
# Folded to one space by class_key, like whitespace: "sea_lion" = "sea-lion" = "sea lion".
KEY_SEPARATORS = ("_", "-", "\u2010", "\u2011", "\u2012", "\u2013", "\u2212")
# Alphabets whose letters are mistaken for each other (a Unicode character name starts with the script).
CONFUSABLE_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC")
# Greek and Cyrillic letters (after NFKC + casefold) that look like a Latin letter (Unicode confusables.txt).
LATIN_LOOKALIKES = {
    "\u0430": "a", "\u0441": "c", "\u0501": "d", "\u0435": "e", "\u04bb": "h", "\u0456": "i", "\u0458": "j",
    "\u043a": "k", "\u04cf": "l", "\u043e": "o", "\u0440": "p", "\u051b": "q", "\u0455": "s", "\u0443": "y",
    "\u0445": "x", "\u051d": "w", "\u0475": "v", "\u04af": "y", "\u0451": "\u00eb", "\u0457": "\u00ef",
    "\u03b1": "a", "\u03bf": "o", "\u03c1": "p", "\u03b9": "i", "\u03ba": "k", "\u03bd": "v", "\u03c5": "u",
    "\u03c7": "x", "\u03f2": "c", "\u03f3": "j", "\u03b3": "y", "\u03b7": "n",
    # capitals (looked up before case folding: Cyrillic Т and Greek Τ look like T, their small forms do not)
    "\u0410": "A", "\u0412": "B", "\u0415": "E", "\u041a": "K", "\u041c": "M", "\u041d": "H", "\u041e": "O",
    "\u0420": "P", "\u0421": "C", "\u0422": "T", "\u0425": "X", "\u0423": "Y", "\u0405": "S", "\u0406": "I",
    "\u0408": "J", "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H", "\u0399": "I",
    "\u039a": "K", "\u039c": "M", "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T", "\u03a5": "Y",
    "\u03a7": "X",
}
_KEEP_FORMAT = set(JOINERS)
_BIDI_CONTROLS = set(BIDI_CONTROLS)
_REFUSED = set(REFUSED_CHARACTERS)
_SPLIT = re.compile("|".join(map(re.escape, SEPARATORS)))
# a class key ending in a qualifier: "name (qualifier)", neither part empty nor holding a parenthesis
_QUALIFIED = re.compile(r"^([^()]*[^() ]) ?\( ?([^()]*[^() ]) ?\)$")
_KEY_FOLD = re.compile("[" + re.escape("".join(KEY_SEPARATORS)) + r"\s]+")
_FILLERS = set("\u115f\u1160\u3164\uffa0\u2800\u034f\u180e")  # render as nothing, yet are "letters"
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Cs", "Co", "Cn"}


def _has_surrogates(s: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in s)


def _dropped(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat == "Cc" or (cat == "Cf" and ch not in _KEEP_FORMAT and ch not in _REFUSED) or ch in _FILLERS


def clean_text(s: str) -> str:
    """NFC, drop control and invisible format characters, collapse whitespace, strip (shared with descriptions)."""
    s = unicodedata.normalize("NFC", s)
    s = "".join(" " if ch.isspace() else ch for ch in s if ch.isspace() or not _dropped(ch))
    return unicodedata.normalize("NFC", " ".join(s.split()))


def is_visible(s: str) -> bool:
    """Whether a cleaned text shows anything (not only joiners, combining marks or spaces)."""
    return any(unicodedata.category(ch) not in _INVISIBLE_CATEGORIES for ch in s)


def _script(ch: str) -> str | None:
    """LATIN, GREEK or CYRILLIC for a letter of those alphabets, else None."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    word = unicodedata.name(ch, "").split(" ", 1)[0]
    return word if word in CONFUSABLE_SCRIPTS else None


def _error(msg: str, rule: str) -> PromptError:
    """A PromptError carrying the rule it enforces (`e.rule`: what conformance vectors compare across ports)."""
    e = PromptError(msg)
    e.rule = rule
    return e


def check_text(s: str, what: str) -> None:
    """Refuse bidi controls (a label that displays as another), zero-width characters, and ZWJ/ZWNJ
    next to a Latin, Greek or Cyrillic letter or at an end (there they only hide a difference)."""
    bad = sorted({f"U+{ord(ch):04X}" for ch in s if ch in _BIDI_CONTROLS})
    if bad:
        raise _error(f"{what} contains bidirectional control characters ({', '.join(bad)}) that make text "
                     "display as something else; remove them", "bidi")
    bad = sorted({f"U+{ord(ch):04X}" for i, ch in enumerate(s) if ch in _REFUSED or (
        ch in _KEEP_FORMAT and (i == 0 or i == len(s) - 1 or _script(s[i - 1]) or _script(s[i + 1])
                                or s[i - 1].isspace() or s[i + 1].isspace()))})
    if bad:
        raise _error(f"{what} contains zero-width characters ({', '.join(bad)}) that hide a difference between "
                     "names; remove them", "zero-width")


def class_key(name: str) -> str:
    """The identity of a class name, the one used everywhere: NFKC, cleaned, case-folded, joiners
    ignored, and "_", "-" and whitespace folded to one space ("Sea_Lion" = "sea lion" = "ｓｅａ ｌｉｏｎ")."""
    s = unicodedata.normalize("NFKC", clean_text(unicodedata.normalize("NFKC", name)).casefold())
    s = "".join(ch for ch in s if ch not in _KEEP_FORMAT)
    s = _KEY_FOLD.sub(" ", s).strip()
    m = _QUALIFIED.match(s)
    return f"{m.group(1)} ({m.group(2)})" if m else s


def split_qualifier(name: str) -> tuple[str, str | None]:
    """(class key of the name, class key of its qualifier or None): "Mouse (Rodent)" -> ("mouse", "rodent")."""
    m = _QUALIFIED.match(class_key(name))
    return (m.group(1), m.group(2)) if m else (class_key(name), None)


def skeleton(name: str) -> str:
    """class_key with Greek and Cyrillic look-alikes of Latin letters replaced by them ("сat" -> "cat");
    capitals are replaced before case folding, small letters after it."""
    s = "".join(LATIN_LOOKALIKES.get(ch, ch) for ch in clean_text(unicodedata.normalize("NFKC", name)))
    return "".join(LATIN_LOOKALIKES.get(ch, ch) for ch in class_key(s))


def _check_scripts(name: str, what: str) -> None:
    """Refuse a word (a run of letters) that mixes Latin, Greek and Cyrillic letters."""
    for word in re.findall(r"[^\W\d_]+", name):
        scripts = {_script(ch) for ch in word} - {None}
        if len(scripts) > 1:
            odd = min(sorted(scripts), key=lambda sc: sum(_script(ch) == sc for ch in word))  # ties: alphabetical
            chars = ", ".join(f"{ch} U+{ord(ch):04X}" for ch in dict.fromkeys(ch for ch in word if _script(ch) == odd))
            raise _error(f'{what} ("{name}") mixes {" and ".join(sorted(x.title() for x in scripts))} letters in one '
                         f"word ({chars} is {odd.title()}); type it in one alphabet", "mixed-script")


def _pieces(prompt: str | Sequence[str]) -> list[str]:
    if isinstance(prompt, (bytes, bytearray)):
        try:
            prompt = bytes(prompt).decode("utf-8")
        except UnicodeDecodeError:
            raise _error("the prompt is not valid UTF-8 text; pass class names as text", "utf8") from None
    if isinstance(prompt, str):
        items = [prompt]
    elif isinstance(prompt, Sequence):
        items = list(prompt)
    else:
        raise _error(f"the prompt must be a string or a list of strings, got {type(prompt).__name__}", "type")
    if sum(len(it) for it in items if isinstance(it, str)) > MAX_PROMPT_CHARS:
        raise _error(f"the prompt is longer than {MAX_PROMPT_CHARS} characters; name the classes briefly", "too-long")
    out: list[str] = []
    for it in items:
        if not isinstance(it, str):
            raise _error(f"every class name must be a string, got {type(it).__name__} ({it!r:.40})", "type")
        if _has_surrogates(it):
            raise _error(
                "the prompt contains bytes that are not valid UTF-8 (check the terminal's encoding); "
                "pass class names as UTF-8 text", "utf8"
            )
        out.extend(_SPLIT.split(it))
    return out


def _blank(raw: str) -> bool:
    """Nothing but spaces and control characters: a stray comma, not an invisible name."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in raw)


def _shown(raw: str) -> str:
    """A name as the user typed it, with invisible characters made visible (\\u200b, ...)."""
    raw = " ".join(raw.split())
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in raw[:MAX_NAME_CHARS])


def _parentheses_pair(name: str) -> bool:
    """Every "(" closed by a later ")" (after NFKC, which folds the fullwidth ones)."""
    depth = 0
    for ch in name:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


def parse_classes(prompt: str | Sequence[str]) -> list[str]:
    """Split, normalise and check a class prompt; raise PromptError for empty, stray-comma, invisible,
    refused-character, mixed-script, look-alike or duplicate names."""
    pieces = _pieces(prompt)
    names = [clean_text(unicodedata.normalize("NFKC", p)) for p in pieces]
    if all(_blank(p) for p in pieces):
        raise _error('the prompt is empty; name at least 2 classes separated by commas, e.g. "dog, cat"', "empty")
    for i, n in enumerate(names):
        if _blank(pieces[i]):
            raise _error(
                f"class name {i + 1} of {len(names)} is empty (a stray comma?); "
                'separate class names with single commas, e.g. "dog, cat"', "stray-comma"
            )
        if not n or not is_visible(n):
            raise _error(f'class name {i + 1} of {len(names)} ("{_shown(pieces[i])}") has no visible characters; '
                         "give every class a readable name", "invisible")
        check_text(n, f"class name {i + 1}")
        _check_scripts(n, f"class name {i + 1}")
        if not _parentheses_pair(n):
            raise _error(f'class name {i + 1} of {len(names)} ("{_shown(pieces[i])}") has unbalanced parentheses; a comma '
                         'always separates classes, so a sense in parentheses holds no comma: write e.g. "mouse (rodent)"',
                         "parentheses")
    names = [n[:MAX_NAME_CHARS].rstrip() if len(n) > MAX_NAME_CHARS else n for n in names]
    seen: dict[str, int] = {}
    looks: dict[str, int] = {}
    for i, n in enumerate(names):
        k = class_key(n)
        if k in seen:
            j = seen[k]
            if names[j] != n:
                why = ("case and spacing are ignored" if names[j].casefold() == n.casefold()
                       else '"_", "-" and spaces are one, character width, case and spacing are ignored')
                how = f' (as "{names[j]}" and "{n}"; {why})'
            else:
                first, again = _shown(pieces[j]), _shown(pieces[i])
                how = "" if first == again else f' (as "{first}" and "{again}"; invisible characters and character width are ignored)'
            raise _error(f'the class "{names[j]}" is named twice{how}; name each class once', "duplicate")
        sk = skeleton(n)
        if sk in looks:
            j = looks[sk]
            odd = ", ".join(f"{ch} U+{ord(ch):04X} {unicodedata.name(ch, '').split(' ', 1)[0].title()}"
                            for ch in dict.fromkeys(names[j] + n) if ch in LATIN_LOOKALIKES)
            raise _error(f'the classes "{names[j]}" and "{n}" look the same but are spelled with different alphabets '
                         f"({odd}); type both in one alphabet", "confusable")
        seen[k] = i
        looks[sk] = i
    return names


def classes_from_lines(text: str) -> list[str]:
    """The classes of a classes file (`personalize --classes-file`): one name per line, blank lines and
    lines starting with "#" ignored, the rest one prompt for `parse_classes` (a line with commas names
    several classes, as in a prompt); a line's errors are reported with its number."""
    lines = [(no, line) for no, line in enumerate(str(text).splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise _error('the classes file names no class; write one class name per line, e.g. "dog"', "empty")
    for no, line in lines:
        try:
            parse_classes(line)
        except PromptError as e:
            raise _error(f"line {no}: {e}", getattr(e, "rule", "other")) from None
    return parse_classes([line for _, line in lines])


def check_class_count(names: Sequence[str], k_max: int) -> None:
    """A classifier needs 2..k_max classes (k_max: the most a prompt may name, runtime/groups.py
    `max_classes`); say the allowed range otherwise."""
    k = len(names)
    if k < 2:
        got = f'only 1 class ("{names[0]}")' if k == 1 else "no classes"
        raise PromptError(f"a classifier needs at least 2 classes but the prompt has {got}; this bundle allows 2 to {k_max}")
    if k > k_max:
        raise PromptError(f"the prompt has {k} classes but this bundle allows 2 to {k_max}; split the task into prompts of at most {k_max} classes")


# Prompts whose outcome every port must reproduce (export/conformance.py can write `prompt_vectors()`
# into the vectors file; a port compares its names, its class keys, or the rule it refused with).
CONFORMANCE_PROMPTS = (
    "dog, cat", "  golden   retriever ,\tcat\n", "Dog, CAT", "cafe\u0301, tea", "犬, кошка, 🐴, chat 🐈",
    "👩\u200d🚀, dog", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645, dog", "dog, cat\uff0chorse",
    "dog\u3001cat\ufe50horse\uff64bird", "\uff44\uff4f\uff47, cat", "\ufb01sh, dog", "sea_lion, dog", "β-carotene, dog",
    "", "dog,,cat", "dog, Dog", "sea_lion, sea lion, dog", "t-shirt, t shirt", "dog, \uff44\uff4f\uff47",
    "cat, c\u0430t", "p\u03bfp, dog", "\u0440\u043e\u0440, pop", "dog, do\u200bg", "\ufeffdog, cat", "d\u2060og, cat",
    "d\u200dog, cat", "\u202egod, cat", "dog, c\u2066at\u2069", "dog\u200e, cat", "\u200b, dog", "dog, \u00addog",
)


def prompt_vectors() -> list[dict]:
    """{prompt, names, keys} or {prompt, error: rule} for every CONFORMANCE_PROMPTS entry."""
    out: list[dict] = []
    for p in CONFORMANCE_PROMPTS:
        try:
            names = parse_classes(p)
        except PromptError as e:
            out.append({"prompt": p, "error": getattr(e, "rule", "other")})
            continue
        out.append({"prompt": p, "names": names, "keys": [class_key(n) for n in names]})
    return out
