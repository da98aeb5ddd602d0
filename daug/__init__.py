"""daug: a reproducible study of text data augmentation for LoRA fine-tuning of character chat models.

The data flow reads the same here, in dvc.yaml and in notebooks/:
prepare -> base_model -> augment -> train -> evaluate -> report.
"""

__version__ = "0.1.0"


class DaugError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with status 1."""
