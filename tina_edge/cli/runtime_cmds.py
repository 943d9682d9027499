"""Edge commands: personalize, predict, info, evaluate. Torch-free (imports tina_edge.runtime only).

The commands live by family (`personalize_cmd`, `inspect_cmds`, `evaluate_cmd`); this module is
their one registration list, read by `cli/main.py`.
"""

from __future__ import annotations

from .evaluate_cmd import evaluate
from .inspect_cmds import info, predict
from .personalize_cmd import personalize

COMMANDS = [personalize, predict, info, evaluate]
