"""Error types of tina-edge. Every error a user can cause is one of these, with one clear sentence.

The CLI turns a `TinaEdgeError` into its message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

# What to install for training and export; the CLI and `tina_edge.export` say the same.
TRAIN_EXTRA_HINT = 'this command needs the training extra: pip install "tina-edge[train]" (from a checkout: pip install ".[train]")'


class TinaEdgeError(Exception):
    """Base class of every error tina-edge raises on bad input."""


class PromptError(TinaEdgeError, ValueError):
    """The class prompt cannot be used (empty, too many classes, duplicates, ...)."""


class BundleError(TinaEdgeError):
    """A bundle is missing, incomplete, tampered with or unsafe."""


class ImageError(TinaEdgeError, ValueError):
    """An image given to predict (or as an image prompt) cannot be read or converted."""


class DatasetError(TinaEdgeError, ValueError):
    """A labelled image folder cannot be evaluated (no class folder matches the model's labels, ...)."""


class ArgumentError(TinaEdgeError, ValueError):
    """An API argument is outside its range (e.g. min_prob not in [0, 1])."""


class SettingsError(ArgumentError, PromptError):
    """A generation setting is out of range or unknown: sampler, steps, seed, candidates, threads.

    Also a PromptError, only so that code written when these were PromptErrors still catches them.
    """


class ModelFileError(TinaEdgeError):
    """A personalized model file or output path cannot be read or written."""


class InstallError(TinaEdgeError, ImportError):
    """An optional part is not installed (the [train] extra, matplotlib, WordNet's data files); says what to install."""


class CheckpointError(TinaEdgeError):
    """A Tina checkpoint is missing, damaged, unsafe (a pickle) or lacks what the command needs."""


class TextEncoderError(TinaEdgeError, ValueError):
    """A text encoder spec, folder or weights cannot be built into an encoder."""


class TrainingError(TinaEdgeError, ValueError):
    """A training or evaluation stage cannot run on what it was given (a stage not run yet, too few classes, ...)."""


class WorkDirError(TrainingError):
    """A work directory that is not what the command needs (another universe, a stage not run yet)."""


class ExportError(TinaEdgeError):
    """Export could not produce a faithful bundle: a parity check failed, or a conversion step did."""


class RunError(TinaEdgeError):
    """A graph run was stopped: it ran past the time limit per run (runtime/sessions.py `run_graph`)."""


class UnknownClassError(PromptError):
    """Descriptions or example images name a class that is not in the prompt.

    Carries what it names (`source`: "descriptions" or "images", `name`, `classes`) so a front end
    can word it for its own option (the CLI says "--images names 'zebra', ...") without matching
    class names a second time.
    """

    def __init__(self, message: str, *, source: str, name: object, classes: list[str]):
        super().__init__(message)
        self.source, self.name, self.classes = source, name, list(classes)
