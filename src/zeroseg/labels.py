"""Label conventions every layer shares (one definition each)."""
from __future__ import annotations

IGNORE_INDEX = 255  # label-map value of pixels left out of losses and metrics (uint8 PNG masks hold it)
OTHER = "other"  # the background class's name: label 0 of every zeroseg-synth dataset

__all__ = ["IGNORE_INDEX", "OTHER"]
