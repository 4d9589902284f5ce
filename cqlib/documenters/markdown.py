"""Markdown: headings, each with the first paragraph under it.

Owns: MARKDOWN (its Language record) and its documenter.
Must not: read inside fenced code blocks (a `#` there is code, not a heading).
"""

from __future__ import annotations

from cqlib.documenters.language import Deadline, Language, entry


def document_markdown(text: str, lines: list[str],
                      deadline: Deadline) -> tuple[str, list[dict]]:
    """Headings, each with the first paragraph under it (at most 500 characters of it)."""
    entries, summary, in_fence = [], "", False
    for number, line in enumerate(lines):
        if not number & 511:
            deadline.check()
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if in_fence or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip()
        if not title:
            continue
        paragraph, size, follow = [], 0, number + 1
        while follow < len(lines) and size < 500:
            stripped = lines[follow].strip()
            if lines[follow].startswith("#") or (paragraph and not stripped):
                break
            if stripped:
                paragraph.append(stripped)
                size += len(stripped) + 1
            follow += 1
        first = " ".join(paragraph)[:500]
        summary = summary or first
        entries.append(entry("heading", title[:200], number + 1, line.strip()[:200], first))
    return summary, entries


MARKDOWN = Language("markdown", extensions=(".md", ".markdown"), aliases=("md",),
                    document=document_markdown)

LANGUAGES = (MARKDOWN,)  # what this family adds to the table in __init__.py
