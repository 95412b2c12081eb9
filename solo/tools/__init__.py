"""Command-line tools (``python -m solo.tools.<name>``): checkpoint conversion, log plotting, and the Triton compile
gate (``triton_compile_check``: every Triton kernel compiled for real GPU targets at the ops' own launches)."""
