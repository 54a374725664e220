"""rightfocus.metrics."""
