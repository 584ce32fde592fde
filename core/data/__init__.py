"""Photos in: decoding, zip safety, folder walks, datasets, saved datasets, names, splits."""
