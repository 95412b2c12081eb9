"""Print the README's two commands (the first ```bash block under "## The two commands"), one per line.

Used by .ci/run so that CI runs exactly what the README tells a new user to run; tests/test_packaging.py checks the
block's shape.
"""

from __future__ import annotations

import re
import sys


def readme_commands(text: str) -> list[str]:
    """The commands of the first bash block of the "## The two commands" section, comments stripped."""
    section = text.split("## The two commands", 1)
    if len(section) != 2:
        raise ValueError("README.md has no '## The two commands' section")
    block = re.search(r"```bash\n(.*?)```", section[1], re.DOTALL)
    if block is None:
        raise ValueError("the '## The two commands' section of README.md has no ```bash block")
    commands = []
    for line in block.group(1).splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()  # a comment after the command (a `#` inside a word stays)
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "README.md", encoding="utf-8") as f:
        print("\n".join(readme_commands(f.read())))
