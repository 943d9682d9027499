"""personalize's --from-folders DIR (issue 21): classes and photos from one folder per class.

Why a module of its own: personalize_cmd.py is near its size limit. Torch-free.
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
