"""rightfocus.bayes."""
