"""The pretrained base and what it computes: registry, weights, extraction, cache, views."""
