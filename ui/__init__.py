"""Streamlit-only helpers shared by the pages: state keys, widgets, rendering, resources."""
