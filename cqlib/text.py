"""How text leaves cq and comes back: file names, terminals, JSON and one-line messages.

Inside cq a file name is a str that holds its bytes exactly (os.fsdecode: a byte that is not
UTF-8 becomes a lone surrogate).  Such a str cannot be written as UTF-8, so every place where
text leaves cq goes through this module: JSON (MCP over stdio and HTTP, `--json`), a terminal,
an error message.  A name that is UTF-8 leaves as itself; one that is not leaves with each
undecodable byte written `\\xNN` and each backslash doubled, which path_text_names reverses.
Owns: path_text and path_text_names (that pair), path_bytes (a name's bytes, for a client
that needs them exactly), display (a terminal line: control characters as escapes, so a
repository cannot drive a terminal), one_line (any message as one line), json_text (JSON
that can always be written).
Must not: import anything of cq's but errors; it is on the hot paths.
"""

from __future__ import annotations


def is_text(name: str) -> bool:
    """True if a str can be written as UTF-8 (no lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def path_text(name: str) -> str:
    """A file name (or any str that may hold undecodable bytes) as UTF-8 text: itself where it
    is text, else with each undecodable byte as `\\xNN` and each backslash doubled."""
    if is_text(name):
        return name
    return "".join("\\\\" if ch == "\\" else f"\\x{ord(ch) - 0xDC00:02x}"
                   if "\udc80" <= ch <= "\udcff" else ch if is_text(ch) else
                   ch.encode("utf-8", "backslashreplace").decode() for ch in name)


def path_bytes(name: str) -> str | None:
    """The bytes of a file name in hexadecimal, where its text (path_text) is not the name
    itself; None for a name that is UTF-8."""
    if is_text(name):
        return None
    import os

    return os.fsencode(name).hex()


def path_text_names(text: str) -> list[str]:
    """The file names a client's text may stand for: the text itself, and where it holds
    path_text's escapes, the name they write."""
    if "\\" not in text:
        return [text]
    import re

    def byte(match) -> str:
        code = match.group(1)
        return "\\" if code == "\\" else chr(0xDC00 + int(code[1:], 16))

    decoded = re.sub(r"\\(\\|x[89a-fA-F][0-9a-fA-F])", byte, text)
    return [text, decoded] if decoded != text else [text]


def display(text: str, keep_newlines: bool = False) -> str:
    """Text for a terminal: control characters (from file names or file contents) shown as
    escapes, so nothing in a repository can move the cursor or forge output lines."""
    return "".join(ch if (" " <= ch < "\x7f" or ch >= "\xa0" or ch == "\t" or
                          (keep_newlines and ch == "\n")) else repr(ch)[1:-1] for ch in text)


def one_line(text: str) -> str:
    """A message as one line that any channel takes, whatever the bytes in it."""
    return display(path_text(text))


def json_text(value, indent: int | None = None, ascii_only: bool = False) -> str:
    """A value as JSON text that can always be written as UTF-8 (or, ascii_only, as ASCII):
    where some str in it is not text (a client's lone surrogate), JSON's own escapes
    (`\\udcff`) carry it exactly.  File names are made text (named_path) by whoever puts
    them in."""
    import json

    options = {"sort_keys": True, "indent": indent,
               "separators": (",", ":") if indent is None else None}
    text = None if ascii_only else json.dumps(value, ensure_ascii=False, **options)
    return text if text is not None and is_text(text) else \
        json.dumps(value, ensure_ascii=True, **options)


def named_path(path: str) -> dict:
    """A file name as an answer gives it: `path` as text (path_text), and `path_bytes` (its
    bytes in hexadecimal) where that text is not the name itself."""
    raw = path_bytes(path)
    return {"path": path_text(path), **({"path_bytes": raw} if raw else {})}
