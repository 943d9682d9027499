"""ImageNet's own classifier rows as extra (text, row) knowledge for names the zoo never saw.

Why: with 177 seen classes a text -> row map has almost nothing to generalise from (BENCHMARKS §11:
every map landed at ~32 % held-out recall). The frozen EfficientNet-Lite0 trunk comes with its
ImageNet-1k classifier: 1,000 rows in exactly the feature space our heads use, with WordNet names
and definitions (timm ships them). Norm-matched to the zoo's rows they are good class rows (held-out
oracle recall 90 % vs 85 % for our own probe's rows on the study tasks), so they widen the training
vocabulary of the text prior from 177 to ~970 classes.

Held-out discipline: an ImageNet class is dropped when its synset is a held-out class, or when any
of its names equals a held-out class's name or WordNet synonym (case-insensitive), so no held-out
name or synonym reaches training. Classes already in the universe (seen Tiny-ImageNet synsets) are
dropped too: the zoo's rows speak for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageNetClass:
    wnid: str
    names: list[str]  # WordNet lemmas, first = label
    definition: str
    row: np.ndarray  # [1281] = classifier weight row + bias, as the pretrained head has it


def imagenet_classes(weights: str | None = None) -> list[ImageNetClass]:
    """The 1,000 ImageNet-1k classes with their names, definitions and Lite0 classifier rows."""
    import timm.data

    from tina_edge.train.zoo.trunk import load_lite0_classifier

    sd = load_lite0_classifier(weights).state_dict()
    w, b = sd["classifier.weight"].numpy(), sd["classifier.bias"].numpy()
    info = timm.data.ImageNetInfo()
    out = []
    for i in range(info.num_classes()):
        detailed = info.index_to_description(i, detailed=True)
        definition = detailed.split(": ", 1)[1] if ": " in detailed else ""
        names = [s.strip() for s in info.index_to_description(i).split(",") if s.strip()]
        out.append(ImageNetClass(info.index_to_label_name(i), names, definition,
                                 np.concatenate([w[i], b[i : i + 1]]).astype(np.float32)))
    return out


def usable_extras(classes: list[ImageNetClass], universe: list[dict]) -> tuple[list[ImageNetClass], list[str]]:
    """ImageNet classes that may join training: not in the universe, no held-out synset/name/synonym.

    `universe` is classes.json ({"name", "synonyms", "id", "holdout"}). Returns (kept, dropped wnids
    because of the holdout) so the checkpoint can record exactly what was excluded and why.
    """
    held_ids = {c["id"] for c in universe if c["holdout"]}
    held_names = {n.lower() for c in universe if c["holdout"] for n in [c["name"], *c.get("synonyms", [])]}
    universe_ids = {c["id"] for c in universe}
    universe_names = {c["name"].lower() for c in universe}
    kept, dropped = [], []
    for c in classes:
        if c.wnid in held_ids or any(n.lower() in held_names for n in c.names):
            dropped.append(c.wnid)
        elif c.wnid not in universe_ids and c.names[0].lower() not in universe_names:
            kept.append(c)
    return kept, dropped


def norm_matched_rows(rows: np.ndarray, center: np.ndarray, weight_norm: float, bias: float) -> np.ndarray:
    """Move rows [n, R] (weight..., bias) into the zoo's scale: centred on their own mean, weight part
    rescaled so the mean norm equals `weight_norm`, re-centred on `center`, bias set to `bias`.

    A least-squares scale would shrink them (the rows of one synset under the two heads correlate at
    only ~0.25 after centring), and shrunk rows lose every photo to the full-scale rows of a prompt.
    """
    c = rows - rows.mean(0)
    scale = weight_norm / float(np.linalg.norm(c[:, :-1], axis=1).mean())
    out = c * scale + center
    out[:, -1] = bias
    return out.astype(np.float32)
