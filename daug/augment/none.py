"""`none`: no augmentation. The output is the original training data, the baseline every figure
compares against."""
from __future__ import annotations

from daug.augment import register
from daug.augment.base import Method, copy_fields
from daug.records import ORIGINAL


@register
class NoAugmentation(Method):
    name = ORIGINAL  # the baseline's output is the original records, which carry this method name
    baseline = True  # daug.augment.apply writes the originals and no augmented copies

    def augment(self, jobs):
        return [copy_fields(job.record) for job in jobs]
