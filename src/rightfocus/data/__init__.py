"""rightfocus.data."""
