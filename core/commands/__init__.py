"""The command line's sub-commands, one file per subject; `core/__main__.py` assembles them.

Each module offers `register(sub, common)` adding its sub-commands to the parser; the command
functions print for people (names made inert by `core.text`) or, with --json, one JSON value.
"""
