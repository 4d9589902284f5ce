"""What a search answer shows of each hit, so that an assistant can decide without another call.

Owns: a hit as answers give it (path and line range, kind, qualified symbol, signature, the
doc's first line, and a few numbered lines: a definition's first lines, or the lines of a
file that hold the query's words, with the function whose lines hold the most of them), fields
with no value left out; the same code in several places (sync and async twins made from one
source, vendored copies) folded into one hit that names the others; each hit's freshness;
and the text an answer of hits reads as.
Must not: rank (search.py does), or write anything.
"""

from __future__ import annotations

import re

from cqlib.errors import CqError
from cqlib.reader import qualified, read_worktree_file
from cqlib.search import SearchQuery
from cqlib.text import display, named_path, one_line
from cqlib.words import other_forms

SNIPPET_LINES = 3  # lines shown of each hit
BODY_KINDS = ("function", "method", "macro")  # definitions whose lines are code, not members
SNIPPET_CHARS = 160  # characters shown of each line
# Words that tell sync and async twins apart, and their spelling in paths.
TWIN_WORDS = re.compile(r"(?i)\b(async|await)\s+|async_?|_?async\b")


def freshness(path: str, edited: set, stale: set | None) -> str:
    """fresh, edited (differs from HEAD in the working tree) or stale (HEAD moved past the
    index; None: which paths moved is not known, so any may have)."""
    if path in edited:
        return "edited"
    return "stale" if stale is None or path in stale else "fresh"


def presented(results: list[dict], query: str, top: str | None, edited: set,
              stale: set | None, doc_of=lambda path: None) -> list[dict]:
    """The hits of a search as an answer gives them: twins folded into the first of them,
    each with its lines (read from the work tree at `top`) and freshness; a file's hit
    names the function whose lines hold the most of the query's words (`in`), from its
    documentation as doc_of(path) gives it (None where unknown)."""
    words = SearchQuery(query).words
    texts: dict = {}
    hits, twins = [], {}
    for r in results:
        key = twin_key(r)
        if key is not None and key in twins:
            twins[key].setdefault("also", []).append(f"{one_line(r['path'])}:{r['line']}")
            continue
        hit = {**named_path(r["path"]), "line": r["line"],
               **({"end": r["end"]} if r.get("end", r["line"]) > r["line"] else {}),
               "kind": r["kind"], "symbol": r["symbol"],
               **{k: r[k] for k in ("signature", "doc", "matched_summary_by") if r.get(k)},
               "freshness": "stale" if r.get("outdated") and r["path"] not in edited
               else freshness(r["path"], edited, stale)}
        lines = file_lines(top, r["path"], texts)
        found = words_by_line(lines, words) if lines and r["kind"] == "file" else {}
        snippet = hit_lines(lines, r, best_lines(lines, words, found)) if lines else ""
        if snippet:
            hit["lines"] = snippet
        within = richest_function(doc_of(r["path"]), found) if found else None
        if within:
            hit["in"] = within
        if key is not None:
            twins[key] = hit
        hits.append(hit)
    return hits


def twin_key(result: dict) -> tuple | None:
    """What a definition's twins share: its kind, its file's name, its symbol and signature
    (the words that tell sync from async left out) and its doc.  None for a file, an import,
    or a definition with too little to tell it from an unrelated one of the same name."""
    signature = TWIN_WORDS.sub("", result.get("signature") or "").replace(" ", "")
    if result["kind"] in ("file", "import", "heading") or \
            not (result.get("doc") or len(signature) > 20):
        return None
    return (result["kind"], TWIN_WORDS.sub("", result["path"].rsplit("/", 1)[-1]).lower(),
            TWIN_WORDS.sub("", result["symbol"]).lower(), signature, result.get("doc") or "")


def file_lines(top: str | None, path: str, texts: dict) -> list[str] | None:
    """A file's lines as the work tree holds them (read once per answer); None if unread."""
    if path not in texts:
        data = None
        if top is not None:
            try:
                data = read_worktree_file(top, path)
            except CqError:
                data = None
        texts[path] = None if data is None or b"\0" in data[:8000] else \
            data.decode("utf-8", "replace").split("\n")
    return texts[path]


def hit_lines(lines: list[str], result: dict, best: list[int]) -> str:
    """A hit's numbered lines: a definition's first lines, or for a file its best lines
    (see best_lines), in the file's order."""
    if result["kind"] == "file":
        numbers = sorted(best)
    else:
        first = result["line"]
        last = min(result.get("end") or first, first + SNIPPET_LINES - 1, len(lines))
        numbers = range(first, last + 1)
    return "\n".join(f"{n}: {shortened(lines[n - 1])}" for n in numbers
                     if 0 < n <= len(lines) and lines[n - 1].strip())


def words_by_line(lines: list[str], words: set) -> dict[int, frozenset]:
    """line number -> the query words the line holds, for the lines holding any (a word
    found by one of its other forms, `max` for `maximum`, counts as it)."""
    if not words:
        return {}
    form_of = {form: word for word in words for form in (word, *other_forms(word))}
    pattern = re.compile("|".join(re.escape(w) for w in sorted(form_of, key=len, reverse=True)))
    # One pass over the whole text (a line at a time cost a long file's hit 10 ms or more).
    text = "\n".join(lines).lower()
    found: dict = {}
    number, at = 1, 0
    for match in pattern.finditer(text):
        number += text.count("\n", at, match.start())
        at = match.start()
        found.setdefault(number, set()).add(form_of[match.group(0)])
    return {number: frozenset(held) for number, held in found.items()}


def best_lines(lines: list[str], words: set, found: dict | None = None) -> list[int]:
    """The numbers of the (at most SNIPPET_LINES) lines holding the most query words, best
    first (found: words_by_line, if already worked out)."""
    found = words_by_line(lines, words) if found is None else found
    return [number for _, number in sorted((-len(held), number)
                                           for number, held in found.items())[:SNIPPET_LINES]]


def richest_function(doc: dict | None, found: dict[int, frozenset]) -> dict | None:
    """The function or method of a file whose lines hold the most of the query's words (the
    shortest of equals), as a hit names it (symbol, line, end); None if no function's lines
    hold any, or the file is unknown.  Where a file is found by words that no definition's
    name or comment holds, this is where they are used together."""
    from bisect import bisect_left, bisect_right

    numbers = sorted(found)
    best, best_key = None, (0, 0)
    for e in (doc or {}).get("entries", ()):
        if e["kind"] not in BODY_KINDS or (e.get("end") or 0) <= e["line"]:
            continue
        inside = numbers[bisect_left(numbers, e["line"]):bisect_right(numbers, e["end"])]
        key = (len(frozenset().union(*(found[n] for n in inside))), e["line"] - e["end"])
        if key[0] and key > best_key:
            best, best_key = e, key
    return best and {"symbol": qualified(best, doc["language"]), "line": best["line"],
                     "end": best["end"]}


def shortened(line: str) -> str:
    """A line as a hit shows it: its indentation dropped, cut to SNIPPET_CHARS."""
    text = line.strip()
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "..."


def hits_text(hits: list[dict]) -> str:
    """An answer's hits as text: one heading line each (path:line-end, kind, symbol, what
    sets it apart), its doc and its lines indented under it."""
    out = []
    for hit in hits:
        where = f"{display(hit['path'])}:{hit['line']}" + \
            (f"-{hit['end']}" if "end" in hit else "")
        marks = "" if hit["freshness"] == "fresh" else f" [{hit['freshness']}]"
        also = f" (also {', '.join(hit['also'])})" if hit.get("also") else ""
        out.append(f"{where} {hit['kind']} {hit['symbol']}{marks}{also}")
        if hit.get("in"):
            within = hit["in"]
            out.append(f"  most words in {within['symbol']} {within['line']}-{within['end']}")
        if hit.get("doc"):
            out.append(f"  {hit['doc']}")
        if hit.get("lines"):
            out += [f"  {line}" for line in hit["lines"].split("\n")]
        elif hit.get("signature"):
            out.append(f"  {hit['signature']}")
    return "\n".join(out)
