"""rightfocus.engine."""
