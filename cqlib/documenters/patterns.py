"""The pattern documenter: definitions found line by line, for every language without a parser.

Owns: reading comments (a file's leading comment, the doc comment above a definition), the
scopes a definition sits in (class, impl, namespace, package, receiver, object literal), and
turning a Language's rules into plans that try a run of patterns as one alternation.
Must not: hold any language's rules (the family modules do), or take more than linear time in
its input: with white space collapsed, no pattern has two adjacent quantifiers that can take
the same characters, and a line longer than LONGEST_LINE_MATCHED is not matched at all.
"""

from __future__ import annotations

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
        """The block as text."""
        return "\n".join(p for p in self.parts if p).strip()[:DOC_COMMENT_MAX_CHARS]


def leading_comment(lines: list[str], prefixes: tuple) -> str:
    """The first comment block of a file (after a shebang and blank lines)."""
    block, in_block = CommentBlock(), False
    for line in lines:
        stripped = line.strip()
        text, in_block = comment_step(stripped, prefixes, in_block)
        if text is None:
            if block.parts or (stripped and not stripped.startswith("#!")):
                break
            continue
        block.add(text)
    return block.text()


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
    the package a file declares: what an entry is defined in."""

    def __init__(self, separator: str):
        self.separator = separator
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

    def advance(self, code: str, opened: tuple[str, str] | None) -> None:
        """Account for a line's braces; `opened` is the scope its definition starts."""
        opens, closes = code.count("{"), code.count("}")
        if opened and opened[1] in SCOPE_KINDS:
            if opens > closes:
                self.open.append((*opened, self.depth + 1))
            elif not opens and not code.endswith((";", ",")) and "=" not in code:
                self.pending = opened  # its `{` comes on a later line
        elif self.pending and opens > closes:
            self.open.append((*self.pending, self.depth + 1))
            self.pending = None
        self.depth = max(self.depth + opens - closes, 0)
        while self.open and self.depth < self.open[-1][2]:
            self.open.pop()


def document_by_patterns(language: Language, lines: list[str], deadline: Deadline) -> list[dict]:
    """Definitions found line by line, each with the doc comment above it and the scope it
    is defined in (class, impl, namespace, package, receiver, object literal)."""
    by_line = plans(language)
    scopes = Scopes(language.separator)
    entries = []
    for index, line, doc in code_lines(lines, language.comments, deadline):
        if len(line) > 4 * LONGEST_LINE_MATCHED:
            continue
        plan = by_line[line[:1] in (" ", "\t"), scopes.at_member_level()]
        code = line  # made single-spaced only to be matched (most lines of Go have no rule)
        if plan or len(line) > LONGEST_LINE_MATCHED:
            code = " ".join(line.split())
            if len(code) > LONGEST_LINE_MATCHED:
                continue
        opened = None
        for step in plan:
            found = plan_match(step, code)
            if found:
                rule_kind, name, extra = found
                if rule_kind == "package":  # the container of all that follows, in every file
                    scopes.package = name
                    break
                kind = "method" if rule_kind == "function" and scopes.open and \
                    scopes.open[-1][1] in ("class", "impl", "trait", "interface") else rule_kind
                entries.append(entry(kind, name, index + 1, code[:200],
                                     doc.text() if doc else "", scopes.container(extra)))
                opened = (name, kind)
                break
        if opened or "{" in code or "}" in code:  # else the scopes stay as they are
            scopes.advance(code, opened)
    return entries
