"""rightfocus.feedback: the human side of explanation feedback.

Query strategies (which training images to ask about), the versioned feedback store (masks a
person painted), and the active-feedback experiment with a simulated annotator. The web app in
:mod:`rightfocus.studio` is built on these; none of them needs it.
"""

from rightfocus.feedback.store import (
    ConflictError,
    FeedbackStore,
    MaskError,
    MaskRecord,
    image_sha256,
    validate_mask,
)
from rightfocus.feedback.strategies import (
    STRATEGIES,
    disagreement,
    least_confident,
    mask_overlap,
    misclassified,
    per_class,
    random_scores,
    rank,
    score_pool,
    uncertainty,
)

__all__ = [
    "STRATEGIES",
    "ConflictError",
    "FeedbackStore",
    "MaskError",
    "MaskRecord",
    "disagreement",
    "image_sha256",
    "least_confident",
    "mask_overlap",
    "misclassified",
    "per_class",
    "random_scores",
    "rank",
    "score_pool",
    "uncertainty",
    "validate_mask",
]
