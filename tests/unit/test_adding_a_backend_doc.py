"""The example in docs/adding-a-backend.md runs as written (wrapped in a coroutine, since it awaits)."""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding-a-backend.md"


def test_the_scripted_backend_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/adding-a-backend.md has no python example"
    imports = "\n".join(line for line in blocks[0].splitlines() if line.startswith(("from ", "import ")))
    body = "\n".join(line for line in blocks[0].splitlines() if not line.startswith(("from ", "import ")))
    source = f"import asyncio\n{imports}\n\nasync def example():\n{textwrap.indent(body, '    ')}\n"
    namespace: dict[str, object] = {}
    exec(compile(source, str(DOC), "exec"), namespace)
    asyncio.run(namespace["example"]())  # type: ignore[operator]
