"""The README's library example runs as written (at the ci preset; no downloads)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_library_example_runs():
    text = README.read_text()
    section = text[text.index("## Using the library"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    runnable = [line for line in code.splitlines()
                if "from_clip(" not in line and "from_official(" not in line]   # need downloads
    source = "\n".join(runnable).replace('ModelConfig.preset("tiny")', 'ModelConfig.preset("ci")')
    assert 'preset("ci")' in source
    namespace = {}
    exec(compile(source, "README.md", "exec"), namespace)
    sim, out = namespace["sim"], namespace["out"]
    assert sim.shape == (2, 2)
    assert (out["logits"] - namespace["model"].scale() * sim).abs().max() < 1e-4
    assert namespace["ids"].shape[1] == namespace["cfg"].context_length
