"""Markdown: headings, each with the first paragraph under it and its section's extent.

Owns: MARKDOWN (its Language record) and its documenter: a heading's section runs to the line
before the next heading of its level or above (fewer `#`), or to the end of the file.
Must not: read inside fenced code blocks (a `#` there is code, not a heading).
"""

from __future__ import annotations

from cqlib.documenters.extent import last_line
from cqlib.documenters.language import Deadline, Language, entry


def document_markdown(text: str, lines: list[str],
                      deadline: Deadline) -> tuple[str, list[dict]]:
    """Headings, each with the first paragraph under it (at most 500 characters of it) and
    the last line of its section."""
    entries, summary, in_fence = [], "", False
    sections: list = []  # (level, entry) of the headings whose sections are still open
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
        level = len(line) - len(line.lstrip("#"))
        while sections and sections[-1][0] >= level:
            sections.pop()[1]["end"] = number  # the line before this one, 1-based
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
        sections.append((level, entries[-1]))
    for _, heading in sections:
        heading["end"] = max(last_line(lines), heading["line"])
    return summary, entries


MARKDOWN = Language("markdown", extensions=(".md", ".markdown"), aliases=("md",),
                    document=document_markdown)

LANGUAGES = (MARKDOWN,)  # what this family adds to the table in __init__.py
