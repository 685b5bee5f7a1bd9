"""The click front end, installed as ``rankguide_edge.cli`` (the top-level ``cli/`` folder is mapped there)."""
