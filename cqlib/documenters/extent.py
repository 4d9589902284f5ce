"""Where each definition ends: the `end` of the entries the pattern documenter finds.

Owns: reading a file's blocks as its language's Blocks describe them, in one pass over the
file: braces (past strings, comments, character literals, preprocessor lines, heredocs and
regular expression literals), or indentation; and from them the last line of each entry's
definition: the `}` closing the body that follows it (past a K&R function's parameter
declarations), the `;` ending its statement, or the last line of a statement continued in
parentheses, brackets or a long string.
Must not: find definitions (patterns.py and the family modules do), or take more than linear
time: the lexer is one regular expression each of whose alternatives, once started, either
always matches or fails within a line, and a definition's body is looked for no further than
the next definition's line.
"""

from __future__ import annotations

from collections import namedtuple

from cqlib.documenters.language import Blocks, Deadline

# A line that starts unindented with a word ends the statement above it, but for these.
CONTINUING_WORDS = frozenset({"where", "throws", "extends", "implements", "requires"})
IDENTIFIER_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_$")
STRUCTURE = frozenset("{}()[];")  # the characters the lexer keeps
LEXERS: dict = {}  # (blocks, comments) -> the compiled lexer, made on first use


class Structure(namedtuple("Structure", ("tokens", "brace_lines", "closes", "continued"))):
    """A file's blocks, read once: the structural characters of each line that has any,
    outside strings and comments (tokens, by line index); the line index of each `{`, in
    order (brace_lines), and of the `}` that closes it (closes; the last line if none
    does); per line, whether it starts inside a string, comment or heredoc begun above it
    (continued)."""

    __slots__ = ()

    def line_tokens(self, index: int) -> str:
        """The structural characters of a line ("" for most lines)."""
        return self.tokens.get(index, "")

    def braces_before(self, index: int) -> int:
        """How many `{` the lines before this one open."""
        from bisect import bisect_left

        return bisect_left(self.brace_lines, index)


def last_line(lines: list[str]) -> int:
    """The number of the file's last line (a final newline starts no line)."""
    return max(len(lines) - (len(lines) > 1 and lines[-1] == ""), 1)


def read_blocks(blocks: Blocks | None, comments: tuple, lines: list[str],
                deadline: Deadline) -> Structure | None:
    """A file's braces read once (see Structure), for a language of braces; else None."""
    if blocks is None or blocks.indent:
        return None
    return structure(blocks, comments, lines, deadline)


def set_extents(blocks: Blocks | None, comments: tuple, lines: list[str], entries: list[dict],
                found: Structure | None, deadline: Deadline) -> None:
    """Give each entry the last line of its definition, from the file's braces as
    read_blocks found them, or from its indentation (left at its own line without blocks)."""
    if blocks is None or not entries:
        return
    if found is None:
        indented_extents(lines, entries, deadline)
    else:
        braced_extents(found, blocks, comments, lines, entries, deadline)


def lexer(blocks: Blocks, comments: tuple):
    """The regular expression that reads a file of this kind: its alternatives are things
    skipped whole (`skip`), a run of structural characters (`tok`), and a regular
    expression literal after the character that allows one (`lead`, `regex`).  What none
    of them matches (most of a file) is passed over by the regular expression engine."""
    key = (blocks, comments)
    if key not in LEXERS:
        import re

        skipped = [r"\\[^\n]"]  # an escaped character outside a string (shell's \" and \{)
        if blocks.directives:
            skipped.append(r"^[ \t]*#(?:[^\n\\]|\\[\s\S])*")
        if "/*" in comments:
            skipped.append(r"/\*[\s\S]*?(?:\*/|\Z)")
        if "//" in comments:
            skipped.append(r"//[^\n]*")
        if "#" in comments:  # a word that starts with # (not shell's $# or ${#x})
            skipped.append(r"(?<![^\s;&|()])#[^\n]*")
        if blocks.heredocs:
            # (past the last line's end at once: a line of many `<<a` without a newline after
            # it would otherwise be read to its end again for each)
            skipped.append(r"(?<!<)<<-?(?!<)[ \t]*(?P<quote>['\"]?)(?P<word>[A-Za-z_]\w*)"
                           r"(?P=quote)[^\n]*(?:\n[\s\S]*?(?:^[ \t]*(?P=word)[ \t]*$|\Z)|\Z)")
        skipped.append(r'"""[\s\S]*?(?:"""|\Z)')  # Java's text blocks
        for quote in blocks.long_strings:
            skipped.append(r'"(?:[^"\\]|\\[\s\S])*(?:"|\Z)' if quote == '"' else
                           f"{quote}[^{quote}]*(?:{quote}|\\Z)")
        for quote in blocks.strings:
            skipped.append(f"{quote}(?:[^{quote}\\\\\\n]|\\\\.)*{quote}?")
        if blocks.chars:
            skipped.append(r"'(?:\\.[^'\n]{0,9}|[^'\\\n])'")
        alternatives = [f"(?P<skip>{'|'.join(skipped)})"]
        if blocks.regexes:
            alternatives.append(r"(?P<lead>[(,=:\[!&|?{};])[ \t]*"
                                r"(?P<regex>/(?![/*])(?:[^/\\\n]|\\.)+/)")
        alternatives.append(r"(?P<tok>[{}()\[\];]+)")
        LEXERS[key] = re.compile("|".join(alternatives), re.MULTILINE)
    return LEXERS[key]


def structure(blocks: Blocks, comments: tuple, lines: list[str],
              deadline: Deadline) -> Structure:
    """Read a file's blocks in one pass (see Structure): Python's work is for the lines
    with structural characters and for what spans lines; newlines are counted in C."""
    text, count = "\n".join(lines), len(lines)
    tokens: dict = {}
    brace_lines: list[int] = []
    closes: list[int] = []
    unclosed: list[int] = []
    continued = bytearray(count)
    line = position = 0
    for number, match in enumerate(lexer(blocks, comments).finditer(text)):
        if not number & 4095:
            deadline.check()
        start, position_after = match.span()
        line += text.count("\n", position, start)
        position = position_after
        if match.lastgroup == "skip":
            spans = text.count("\n", start, position_after)
            if spans:
                continued[line + 1:line + spans + 1] = b"\1" * min(spans, count - line - 1)
                line += spans
            continue
        run = match.group("tok") or match.group("lead")
        if match.lastgroup == "regex" and run not in STRUCTURE:  # an operator before one
            continue
        tokens.setdefault(line, []).append(run)
        if "{" in run or "}" in run:
            for char in run:
                if char == "{":
                    unclosed.append(len(closes))
                    closes.append(count - 1)
                    brace_lines.append(line)
                elif char == "}" and unclosed:
                    closes[unclosed.pop()] = line
    return Structure({index: "".join(runs) for index, runs in tokens.items()}, brace_lines,
                     closes, continued)


def braced_extents(found: Structure, blocks: Blocks, comments: tuple, lines: list[str],
                   entries: list[dict], deadline: Deadline) -> None:
    """The end of each entry in a language of braces (see body_end)."""
    starts = sorted({e["line"] for e in entries})
    ends = {}
    for number, line in enumerate(starts):
        if not number & 1023:
            deadline.check()
        limit = starts[number + 1] - 1 if number + 1 < len(starts) else len(lines)
        if blocks.directives and lines[line - 1].lstrip().startswith("#"):
            ends[line] = directive_end(lines, line - 1, limit) + 1
        else:
            ends[line] = body_end(found, lines, line - 1, limit, comments) + 1
    for e in entries:
        e["end"] = max(ends.get(e["line"], e["line"]), e["line"])


def directive_end(lines: list[str], start: int, limit: int) -> int:
    """The last line of a preprocessor line continued by backslashes."""
    index = start
    while index + 1 < limit and lines[index].rstrip().endswith("\\"):
        index += 1
    return index


def body_end(found: Structure, lines: list[str], start: int, limit: int,
             comments: tuple) -> int:
    """The index of the last line of the definition starting at line index `start`: where
    the first `{` outside parentheses closes, or the line of the first `;` outside them, or
    the line before a bracket that closes what the definition is in, or, with none of
    these, the last line the statement runs on (while parentheses, brackets or a long
    string are open, or the next line continues it).  Lines from `limit` on (the next
    definition's) are not looked at."""
    parens, index = 0, start
    while True:
        brace = -1  # the number of the next `{`, worked out at the first
        for char in found.line_tokens(index):
            if char == "{":
                brace = found.braces_before(index) if brace < 0 else brace
                if not parens:
                    return max(found.closes[brace], start)
                brace += 1
            elif char in "([":
                parens += 1
            elif parens and char in ")]":
                parens -= 1
            elif not parens:  # `;` ends it; `}` or `)` closes what it was in (`const (`)
                if char == ";" and index > start:
                    body = old_style_body(found, lines, start, index, limit)
                    if body is not None:
                        return body
                return index if char == ";" or index == start else index - 1
        index += 1
        if index >= limit or index >= len(lines):
            return index - 1
        if not (parens or found.continued[index] or continues(lines[index], comments)):
            return index - 1


def old_style_body(found: Structure, lines: list[str], start: int, index: int,
                   limit: int) -> int | None:
    """The last line of a C function defined the old (K&R) way, whose parameters are
    declared on indented lines between its head (`int f (a, b)`) and the `{` of its body,
    when the `;` at line index `index` ends one of those declarations; else None."""
    if not found.line_tokens(start).endswith(")"):
        return None
    while index < limit and index < len(lines) and lines[index][:1] in (" ", "\t") and \
            found.line_tokens(index) == ";":
        index += 1
    if index < limit and index < len(lines) and lines[index].startswith("{"):
        return max(found.closes[found.braces_before(index)], start)
    return None


def continues(line: str, comments: tuple) -> bool:
    """Whether a line can carry on a statement begun above it: not blank, not a comment,
    and indented or starting with something other than a word (`{`, `)`, an operator)."""
    stripped = line.lstrip()
    if not stripped or stripped.startswith(comments):
        return False
    if line[0] in " \t" or line[0] not in IDENTIFIER_START:
        return True
    return stripped.split(None, 1)[0] in CONTINUING_WORDS


def indented_extents(lines: list[str], entries: list[dict], deadline: Deadline) -> None:
    """The end of each entry in a language of indentation: its last line of code before the
    next line indented no deeper than it (a line that closes a bracket, `)` or `]`, carries
    on what is open)."""
    at: dict = {}
    for e in entries:
        at.setdefault(e["line"] - 1, []).append(e)
    open_entries: list = []  # (indentation, entries at that line)
    last_code = 0
    for index, line in enumerate(lines):
        if not index & 4095:
            deadline.check()
        stripped = line.lstrip()
        if not stripped or stripped[0] == "#":
            continue
        if stripped[0] in ")]}":  # the end of what is open, not a line of its own
            last_code = index
            continue
        indentation = len(line) - len(stripped)
        while open_entries and open_entries[-1][0] >= indentation:
            for e in open_entries.pop()[1]:
                e["end"] = max(last_code + 1, e["line"])
        if index in at:
            open_entries.append((indentation, at[index]))
        last_code = index
    for _, closing in open_entries:
        for e in closing:
            e["end"] = max(last_code + 1, e["line"])
