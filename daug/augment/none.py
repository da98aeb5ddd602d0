"""`none`: no augmentation. The output is the original training data, the baseline every figure
compares against."""
from __future__ import annotations

from daug.augment import register
from daug.augment.base import Method


@register
class NoAugmentation(Method):
    name = "none"
    defaults: dict = {}
    baseline = True  # the driver writes the originals and no augmented copies

    def augment(self, jobs):
        return [{f: job.record.get(f) or "" for f in ("instruction", "input", "output")} for job in jobs]
