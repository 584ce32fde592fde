"""Deployable formats: one record per format, writers, clean-process verification."""
