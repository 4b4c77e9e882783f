"""examples/make_results.py regenerates the results page (smoke sizes; the full run is `make results`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_results_quick_writes_the_page_figures_and_numbers(tmp_path):
    out = tmp_path / "RESULTS.md"
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_results.py"), "--quick", "--out", str(out)],
                   check=True, cwd=tmp_path)
    text = out.read_text()
    numbers = json.loads((tmp_path / "results" / "results.json").read_text())
    for section in ("## 1. The sanity test", "## 2. Δlog p against t", "## 3. Sample quality",
                    "## 4. Image completion", "## 5. Out-of-distribution detection", "## 6. Training curves"):
        assert section in text
    for image in [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]:
        assert (tmp_path / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
    assert set(numbers["table1"]) == {"ncml", "mle"} and len(numbers["ood"]) == 6
    assert all(0.0 <= v <= 1.0 for per_set in numbers["ood"].values() for v in per_set.values())
