"""The pattern documenter: definitions found line by line, for every language without a parser.

Owns: reading comments (a file's leading comment, past licence headers and tool directives;
the doc comment above a definition), the scopes a definition sits in (class, impl, namespace,
package, receiver, object literal), groups of definitions (Go's `const (`), and turning a
Language's rules into plans that try a run of patterns as one alternation.
Must not: hold any language's rules (the family modules do), or take more than linear time in
its input: with white space collapsed, no pattern has two adjacent quantifiers that can take
the same characters, and a line longer than LONGEST_LINE_MATCHED is not matched at all.
"""

from __future__ import annotations

from cqlib.documenters.extent import directive_end, read_blocks, set_extents
from cqlib.documenters.language import (
    DOC_COMMENT_MAX_CHARS,
    LONGEST_LINE_MATCHED,
    Deadline,
    Language,
    entry,
)

ATTRIBUTE_PREFIXES = ("#[", "@")  # Rust attributes, Java annotations, decorators
IDENTIFIER_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
# Kinds whose `{` opens a scope: what is defined inside has the scope as its container.
SCOPE_KINDS = {"class", "interface", "struct", "enum", "trait", "impl", "object", "module",
               "type"}
# Kinds whose value, where it is a literal in braces (`= {`), holds members (`helpers.escape`).
VALUE_KINDS = {"constant", "variable"}
MAX_SCOPES = 32  # scopes named at once (a container of more is machine-made, not read)
# A comment paragraph with any of these (lowercase) is a licence or copyright notice: it and
# what follows it in its comment are never a summary.
LICENCE_MARKERS = ("copyright", "license", "licence", "spdx-", "all rights reserved",
                   "permission is hereby granted", "free software", "redistribution and use",
                   "without warranty", "warranties", "this file is part of", "(c) 1", "(c) 2",
                   "\u00a9")
# A comment line that starts with one of these (lowercase) speaks to a tool, not a reader.
DIRECTIVES = ("-*-", "vim:", "vi:", "coding:", "coding=", "go:build", "+build ", "eslint-",
              "eslint ", "jshint ", "jslint ", "@ts-check", "@ts-nocheck", "@flow", "@jsx ",
              "prettier-ignore", "pylint:", "noqa", "type: ignore", "mypy:", "flake8:",
              "fmt: off", "fmt: on", "isort:", "clang-format ", "nolint", "shellcheck ",
              "istanbul ignore", "tslint:", "cython:")
PLANS: dict = {}  # language name -> its rule plans by (indented, member), made on first use


class LazyPattern:
    """A regular expression compiled at its first use: a family module names its helper
    patterns at import, and a search, which imports them, never compiles one."""

    def __init__(self, pattern: str):
        self.pattern, self.compiled = pattern, None

    def get(self):
        """The compiled pattern."""
        if self.compiled is None:
            import re

            self.compiled = re.compile(self.pattern)
        return self.compiled

    def match(self, text: str):
        """As re.Pattern.match."""
        return self.get().match(text)

    def fullmatch(self, text: str):
        """As re.Pattern.fullmatch."""
        return self.get().fullmatch(text)


# The names a line of a group starts with (`A, B = 1, 2`; `Name Type = value`; `Name`).
GROUP_NAMES = LazyPattern(r"([A-Za-z_]\w*(?: ?, ?[A-Za-z_]\w*)*)(?: |=|$)")


def comment_step(stripped: str, prefixes: tuple, in_block: bool) -> tuple[str | None, bool]:
    """Read one stripped line: (its comment text, or None if it is code; whether a block
    comment is still open after it)."""
    if in_block:
        body, closed, _ = stripped.partition("*/")
        return body.lstrip("*").strip(), not closed
    if stripped.startswith("#!"):
        return None, False
    if "/*" in prefixes and stripped.startswith("/*"):
        body, closed, _ = stripped[2:].partition("*/")
        return body.lstrip("*!").strip(), not closed
    for prefix in prefixes:
        if stripped.startswith(prefix):
            return stripped[len(prefix):].lstrip("/!").strip(), False
    return None, False


class CommentBlock:
    """The lines of one comment block, of which the first DOC_COMMENT_MAX_CHARS are kept."""

    def __init__(self):
        self.parts: list[str] = []
        self.size = 0

    def add(self, text: str) -> None:
        """Add a line (dropped once the block is full)."""
        if self.size < DOC_COMMENT_MAX_CHARS:
            self.parts.append(text)
            self.size += len(text) + 1

    def text(self) -> str:
        """The block as text, without rules drawn in punctuation (`-*****`)."""
        return "\n".join(p for p in self.parts
                         if any(c.isalnum() for c in p)).strip()[:DOC_COMMENT_MAX_CHARS]


def leading_comment(lines: list[str], prefixes: tuple) -> str:
    """The first comment block of a file (after a shebang and blank lines) that says
    something: a block that opens with a licence, or holds only tool directives, is passed
    over for the next one before the code."""
    block, in_block = CommentBlock(), False
    for line in lines:
        stripped = line.strip()
        text, in_block = comment_step(stripped, prefixes, in_block)
        if text is not None:
            block.add(text)
            continue
        if block.parts:
            said = "\n".join(p for p in without_boilerplate(block.parts) if p)
            if said:
                return said.strip()[:DOC_COMMENT_MAX_CHARS]
            block = CommentBlock()
        if stripped and not stripped.startswith("#!"):
            break
    return "\n".join(p for p in without_boilerplate(block.parts) if p).strip()


def without_boilerplate(lines: list[str]) -> list[str]:
    """The lines of a comment or docstring that say something: without tool directives
    (`-*- coding -*-`, `eslint-disable`) and rules drawn in punctuation (`*******`,
    `=====`), and cut before its first paragraph that is a licence or copyright notice
    (with all that follows it)."""
    kept, paragraph = [], []
    for line in [*lines, ""]:
        if line.strip().lower().startswith(DIRECTIVES) or \
                (line.strip() and not any(c.isalnum() for c in line)):
            continue
        if line.strip():
            paragraph.append(line)
            continue
        words = " ".join(" ".join(paragraph).lower().split())
        if any(marker in words for marker in LICENCE_MARKERS):
            break
        kept += [*paragraph, line]
        paragraph = []
    while kept and not kept[-1].strip():
        kept.pop()
    return kept


def code_lines(lines: list[str], prefixes: tuple, deadline: Deadline):
    """(index, line, comment block or None) for each line of code, with the comment block
    directly above it, past attributes and annotations; the block's text is worked out only
    for the few lines that define something.  One pass over the file: linear."""
    starts = tuple({prefix[0] for prefix in prefixes} | {"#"})  # of a comment or a shebang
    doc, in_block = None, False
    for index, line in enumerate(lines):
        if not index & 511:
            deadline.check()
        stripped = line.strip()
        text = None
        if in_block or stripped.startswith(starts):  # else a line of code, or empty
            text, in_block = comment_step(stripped, prefixes, in_block)
        if text is not None:
            doc = doc or CommentBlock()
            doc.add(text)
        elif not stripped:
            doc = None
        elif not stripped.startswith(ATTRIBUTE_PREFIXES):
            yield index, line, doc
            doc = None


def name_before_paren(code: str) -> tuple[str, str, str]:
    """Split `TYPE NAME(ARGS...` at its first parenthesis: (prefix, name, after)."""
    head, _, after = code.partition("(")
    head = head.rstrip()
    prefix = head.rstrip(IDENTIFIER_CHARS + ":~")
    return prefix, head[len(prefix):], after


def plans(language: Language) -> dict:
    """The rule plans of a language for each kind of line, (indented, member) -> plan (see
    rule_plan), made once."""
    if language.name not in PLANS:
        PLANS[language.name] = {
            (indented, member): rule_plan([
                rule for rule in language.rules if not ((rule[2] == "top" and indented) or
                                                        (rule[2] == "member" and not member))])
            for indented in (False, True) for member in (False, True)}
    return PLANS[language.name]


def rule_plan(rules: list) -> list:
    """The rules that apply to a kind of line, as steps tried in turn: a rule function, or
    one pattern for each run of pattern rules.  That pattern is their alternation, each
    rule's groups renamed by its place (`r3`, holding `name3` and perhaps `container3`):
    the first alternative that matches wins, as when the rules were tried one by one, and
    a line that none matches, most lines, costs one match a run, not one a rule."""
    import re

    steps: list = []  # (kinds, a rule function or the patterns of a run)
    for kind, rule, _ in rules:
        if isinstance(rule, str) and steps and isinstance(steps[-1][1], list):
            steps[-1][0].append(kind)
            steps[-1][1].append(rule)
        else:
            steps.append(([kind], [rule] if isinstance(rule, str) else rule))
    return [(kinds, rule if callable(rule) else re.compile("|".join(
        numbered(pattern, n) for n, pattern in enumerate(rule)))) for kinds, rule in steps]


def numbered(pattern: str, n: int) -> str:
    """A rule's pattern as alternative n of its run (see rule_plan).  Its groups are renamed
    and renumbered, so no rule's pattern may refer to a group (`(?P=name)`, `\\1`)."""
    groups = pattern.replace("(?P<name>", f"(?P<name{n}>")
    return f"(?P<r{n}>{groups.replace('(?P<container>', f'(?P<container{n}>')})"


def plan_match(step: tuple, code: str) -> tuple[str, str, str] | None:
    """(kind, name, container) of the rule of a step (see rule_plan) that matches a line."""
    kinds, rule = step
    if callable(rule):
        found = rule(code)
        return found and (kinds[0], *found)
    match = rule.match(code)
    if not match:
        return None
    n = match.lastgroup[1:]  # the alternative's own group closes last
    groups = match.groupdict()
    return kinds[int(n)], groups[f"name{n}"], groups.get(f"container{n}") or ""


class Scopes:
    """The classes, impls, namespaces and object literals open at a line, by brace depth, and
    the package a file declares: what an entry is defined in.  Values' object literals are
    scopes only where `values` (a file whose braces were read past its strings), and no
    more than MAX_SCOPES are open at once (deeper ones are not named)."""

    def __init__(self, separator: str, values: bool = False):
        self.separator, self.values = separator, values
        self.package = ""
        self.open: list[tuple[str, str, int]] = []  # (name, kind, depth of its body)
        self.pending: tuple[str, str] | None = None  # `class X` whose `{` is on a later line
        self.depth = 0

    def container(self, extra: str = "") -> str:
        """The qualified container of a definition at this point."""
        parts = [self.package] + [name for name, _, _ in self.open] + [extra]
        return self.separator.join(p for p in parts if p)

    def at_member_level(self) -> bool:
        """True directly in a class, interface or object body (not in a method's body)."""
        return bool(self.open) and self.depth == self.open[-1][2]

    def advance(self, code: str, opened: tuple[str, str] | None, opens: int,
                closes: int) -> None:
        """Account for a line's braces (`opens` and `closes` of them outside its strings and
        comments); `opened` is the scope its definition starts."""
        if opened and len(self.open) < MAX_SCOPES and (opened[1] in SCOPE_KINDS or (
                self.values and opened[1] in VALUE_KINDS and code.endswith(("= {", "={")))):
            if opens > closes:
                self.open.append((*opened, self.depth + 1))
            elif opened[1] in SCOPE_KINDS and not opens and \
                    not code.endswith((";", ",")) and "=" not in code:
                self.pending = opened  # its `{` comes on a later line
        elif self.pending and opens > closes:
            self.open.append((*self.pending, self.depth + 1))
            self.pending = None
        self.depth = max(self.depth + opens - closes, 0)
        while self.open and self.depth < self.open[-1][2]:
            self.open.pop()


def document_by_patterns(language: Language, lines: list[str], deadline: Deadline) -> list[dict]:
    """Definitions found line by line, each with the doc comment above it, the scope it is
    defined in (class, impl, namespace, package, receiver, object literal) and its extent."""
    by_line = plans(language)
    read = read_blocks(language.blocks, language.comments, lines, deadline)
    scopes = Scopes(language.separator, values=read is not None)
    directives = bool(language.blocks and language.blocks.directives)
    entries: list[dict] = []
    group = None  # while in a group (see Language): [its kind, brace depth, open parens]
    head = None  # (index, code, doc) of a line that may be the first half of a definition
    directive_to = -1  # the last line of the preprocessor directive being read, if any
    for index, line, doc in code_lines(lines, language.comments, deadline):
        if directives:
            if index <= directive_to:  # a `#define`'s body, continued by backslashes,
                continue  # defines nothing
            if line.lstrip().startswith("#"):
                directive_to = directive_end(lines, index, len(lines))
        if len(line) > 4 * LONGEST_LINE_MATCHED:
            continue
        plan = by_line[line[:1] in (" ", "\t"), scopes.at_member_level()]
        code = line  # made single-spaced only to be matched (most lines of Go have no rule)
        if plan or group or len(line) > LONGEST_LINE_MATCHED:
            code = " ".join(line.split())
            if len(code) > LONGEST_LINE_MATCHED:
                continue
        opened = None
        if group:
            group = group_line(group, code, index, doc, scopes, entries)
            plan = ()
        found, said = first_match(plan, code), doc
        if found is None and head and head[0] == index - 1:  # `static int` above `name (`
            found = first_match(plan, f"{head[1]} {code}")
            if found:
                code, said = f"{head[1]} {code}", head[2] or doc
        head = (index, code, doc) if language.split_heads and found is None and \
            not scopes.depth and may_head(line, code) else None
        if found:
            rule_kind, name, extra = found
            if rule_kind == "package":  # the container of all that follows, in every file
                scopes.package = name
            elif not name:  # `const (`: the names are on the lines that follow
                group = [rule_kind, scopes.depth, code.count("(") - code.count(")") - 1]
            else:
                kind = "method" if rule_kind == "function" and scopes.open and \
                    scopes.open[-1][1] in ("class", "impl", "trait", "interface") else rule_kind
                # A preprocessor definition (`#define`) is in no namespace or class.
                directive = directives and code.startswith("#")
                entries.append(entry(kind, name, index + 1, code[:200],
                                     said.text() if said else "",
                                     "" if directive else scopes.container(extra)))
                opened = (name, kind)
        braces = read.line_tokens(index) if read else code  # outside strings, where known
        if opened or "{" in braces or "}" in braces:  # else the scopes stay as they are
            scopes.advance(code, opened, braces.count("{"), braces.count("}"))
    set_extents(language.blocks, language.comments, lines, entries, read, deadline)
    return entries


def first_match(plan: list, code: str) -> tuple[str, str, str] | None:
    """(kind, name, container) of the first rule of a plan that matches a line, or None."""
    for step in plan:
        found = plan_match(step, code)
        if found:
            return found
    return None


def may_head(line: str, code: str) -> bool:
    """Whether an unmatched line could be a definition's return type, on a line of its own
    above its name (see Language.split_heads): unindented, no parenthesis, no preprocessor
    line, and not the end of a statement or of a block."""
    return line[:1] not in (" ", "\t", "#") and "(" not in code and \
        not code.endswith((";", "{", "}", ",", ")", "=", "\\", "*/"))


def group_line(group: list, code: str, index: int, doc: CommentBlock | None, scopes: Scopes,
               entries: list[dict]) -> list | None:
    """Read one line of a group (see Language): an entry for each name it starts with, where
    it is directly in the group; the group, or None once its `)` closed it."""
    kind, depth, parens = group
    if not parens and scopes.depth == depth:
        match = GROUP_NAMES.match(code)
        for name in (match.group(1).split(",") if match else ()):
            if name.strip() != "_":
                entries.append(entry(kind, name.strip(), index + 1, code[:200],
                                     doc.text() if doc else "", scopes.container()))
    group[2] = parens + code.count("(") - code.count(")")
    return group if group[2] >= 0 else None
