"""Image quality: rating aids for the image quality score."""
