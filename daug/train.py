"""LoRA fine-tuning stage (work in progress): see daug/training/."""
from daug.training.data import Example, encode_example, encode_records  # noqa: F401
from daug.training.loss import validation_loss  # noqa: F401
