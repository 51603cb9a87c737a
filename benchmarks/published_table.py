"""Print the published numbers (src/zeroseg/eval/published.json) as the README's Markdown table.

    python benchmarks/published_table.py            # paste between the README's published-table markers

tests/test_real_protocols.py checks that the README holds exactly this output.
"""
from __future__ import annotations


def render() -> str:
    """The Markdown table (and the list of unverified values) from published.json."""
    from zeroseg.eval.real import published_table_markdown

    return published_table_markdown()


if __name__ == "__main__":
    print(render(), end="")
