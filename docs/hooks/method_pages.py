"""MkDocs hook: every ``methods/<name>/README.md`` becomes the site page ``methods/<name>.md``.

The method READMEs stay the one source: they are read at build time, never copied into ``docs/``.
Their links are written for the repository (``../../docs/core.md``, ``../bass/README.md``) and are
rewritten here to the site's layout (``../core.md``, ``bass.md``).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
SIBLING = re.compile(r"\]\(\.\./([a-z0-9_]+)/README\.md")


def site_text(readme: Path) -> str:
    """A method README with its repository-relative links pointed at the site's pages."""
    text = readme.read_text(encoding="utf-8").replace("](../../docs/", "](../")
    return SIBLING.sub(r"](\1.md", text)


def on_files(files, config):
    for readme in sorted((ROOT / "methods").glob("*/README.md")):
        files.append(File.generated(config, f"methods/{readme.parent.name}.md", content=site_text(readme)))
    return files
