"""The README's Python quick start runs as written (with SDA_LIBRARY set, as the README says)."""

from __future__ import annotations

import re

from conftest import REPO


def test_readme_python_quick_start(capsys):
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n### Python\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md (Python quick start)", "exec"), {})
    first_line = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(r"(cpu|cuda:\d+|mps) \d+", first_line), first_line
