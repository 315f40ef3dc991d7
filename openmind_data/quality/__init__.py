"""Image quality: per-image metrics (IQMs) over the image's own masks, and a contact sheet."""
