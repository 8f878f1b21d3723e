"""The README's config reference is the one generated from the config models."""

from __future__ import annotations

from pathlib import Path

from gateway.config import config_reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_reference_matches_the_config_models() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- config-reference:start -->\n") + len(
        "<!-- config-reference:start -->\n"
    )
    end = text.index("<!-- config-reference:end -->")
    assert text[start:end].strip() == config_reference().strip()
