"""Command-line tools (``python -m solo.tools.<name>``): checkpoint conversion."""
