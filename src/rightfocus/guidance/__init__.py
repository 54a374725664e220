"""Explanation-guided training methods (see base.py for the contract)."""

from rightfocus.guidance.base import Guidance, GuidedBatch, guided_forward

__all__ = ["Guidance", "GuidedBatch", "guided_forward"]
