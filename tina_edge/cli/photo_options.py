"""personalize's photo options (issue 21): --from-folders DIR, and what each class was built from.

Why a module of its own: personalize_cmd.py is near its size limit, and these pieces are shared by
its human and JSON reports. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from ..runtime.errors import PromptError


def folder_classes(root: Path, classes: tuple[str, ...], images: dict[str, list[str]] | None
                   ) -> tuple[list[str], dict[str, list[str]]]:
    """(labels, {label: photos}) from DIR's sub-folders (sorted, as `evaluate` reads them), plus any
    --images classes that have no folder; a class with a folder and --images is given photos twice."""
    from ..runtime.photo_prompts import class_folders
    from ..runtime.prompt import class_key

    if classes:
        raise PromptError("--from-folders takes the classes from DIR's sub-folders; leave out CLASSES")
    found = class_folders(root)
    photos = {name: [str(path)] for name, path in found.items()}
    keys = {class_key(n): n for n in found}
    for name, files in (images or {}).items():
        if class_key(name) in keys:
            raise PromptError(f"photos for the class {keys[class_key(name)]!r} are given twice (its folder in "
                              f"{root} and --images); give them once")
        photos[name] = files
    return list(photos), photos


def built_from_meta(clf) -> dict[str, str]:
    """{label: 'name' | "description '...'" | 'N photos' | a mix}, from the model's own metadata."""
    from ..runtime.photo_prompts import built_from

    return built_from(clf.labels, clf.meta.texts, clf.meta.image_prompts)


def named_novelty(p, clf, descriptions) -> dict:
    """Novelty of the classes that have a name or description (photos-only labels are only labels)."""
    texts = clf.meta.texts or list(clf.labels)
    names = [n for n, t in zip(clf.labels, texts) if t is not None]
    if not names:
        return {"seen": [], "new": [], "nearest": {}, "confusable": []}
    if isinstance(descriptions, dict):
        from ..runtime.prompt import class_key

        keep = {class_key(n) for n in names}
        descriptions = {k: v for k, v in descriptions.items() if class_key(k) in keep} or None
    return p.novelty(names, descriptions=descriptions)
