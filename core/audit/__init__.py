"""The dataset audit: likely label errors, near-duplicates, outliers, choices made on them."""
