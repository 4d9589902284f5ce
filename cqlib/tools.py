"""The MCP tools: one table of name -> description, input and output schemas, handler and the
text the answer reads as.

Owns: each tool's contract with an assistant (what it may be asked, what it answers, how a
refusal reads), the freshness every answer states (short SHAs, said once), cursors, and the
caps that keep an answer within about 4,000 tokens.  The handlers call the functions the
command line calls (search, reader, references, changes, status, summarizer) and only shape
their answers; each answer's text is written for a model to read, not JSON.
A session is what a handler is given: `repo`, `config()`, `open_index()`, `overlay()` (the
working tree laid over the index), `fresh_state(meta, request_id, wait=True)` (status.
Freshness), `counts` (a CountCache or None) and `budget` (characters an answer may take):
the MCP server's, or the command line's, whose budget has no limit.
Must not: speak JSON-RPC or HTTP (mcp.py does), or hold SQL or ranking of its own.
"""

from __future__ import annotations

import zlib
from collections import namedtuple

from cqlib.changes import changes
from cqlib.detector import probe_worker
from cqlib.documenters import DEFINITION_KINDS, canonical_language
from cqlib.errors import CqError
from cqlib.gitio import worktree_git_dirs
from cqlib.hits import freshness, hits_text, presented
from cqlib.overlay import search_worktree
from cqlib.reader import doc_at, entry_place, first_line, locate, outline, read_lines
from cqlib.references import reference_note, references
from cqlib.search import SearchQuery, path_matcher, path_names_files
from cqlib.spelling import corrected_text, correction_note
from cqlib.status import index_state
from cqlib.summarizer import summary_progress
from cqlib.text import display, json_text, named_path, path_text

ANSWER_CAP = 16_000  # characters of one answer's text (about 4,000 tokens)
HARD_CAP = 36_000  # no answer's text is longer, whatever a client asks for
SHORT_SHA = 12  # characters of a commit id in an answer
BODY_BUDGET = 6_000  # characters of the bodies one symbol answer gives
# An answer's properties, by type (what every answer says of its state is added to each);
# the README describes each field, so the schemas sent with tools/list stay short.
STATE_OUTPUT = {"head": ["string", "null"], "catching_up": "boolean"}


class Tool(namedtuple("Tool", ("description", "properties", "required", "output", "handler",
                               "render"))):
    """One MCP tool: what tools/list says of it (its description, its arguments' properties
    and which are required, its answer's main properties: name -> JSON type), the handler
    that answers a call (session, arguments, the request's _meta, its id) ->
    structuredContent, and render (structuredContent -> the text of the answer)."""

    __slots__ = ()

    def listing(self, name: str) -> dict:
        """Its tools/list entry: read-only, idempotent, with both schemas."""
        return {"name": name, "description": self.description,
                "inputSchema": {"type": "object", "properties": self.properties,
                                "required": list(self.required),
                                "additionalProperties": False},
                "outputSchema": {"type": "object", "properties": {
                    key: {"type": kind} for key, kind in {**self.output,
                                                          **STATE_OUTPUT}.items()}},
                "annotations": {"readOnlyHint": True, "idempotentHint": True,
                                "openWorldHint": False}}

    def answer(self, structured: dict) -> str:
        """The answer's text: what render writes, with the state's note and the cursor."""
        text = self.render(structured)
        tail = [structured["note"]] if structured.get("note") else []
        if structured.get("next_cursor"):
            tail.append(f"more: ask again with cursor {structured['next_cursor']}")
        tail_text = "".join(f"\n{line}" for line in tail)[:HARD_CAP // 2]
        return text[:HARD_CAP - len(tail_text)] + tail_text  # the cursor is never cut off


TOOLS: dict = {}  # name -> Tool, in the order tools/list gives them (see tool)


def tool(name: str, description: str, properties: dict, required: tuple, output: dict,
         render=None):
    """Register the function it decorates as the handler of MCP tool `name`."""
    def register(handler):
        TOOLS[name] = Tool(description, properties, required, output, handler,
                           render or json_text)
        return handler
    return register


def short(commit: str | None) -> str | None:
    """A commit id as answers give it."""
    return commit[:SHORT_SHA] if commit else commit


def public_state(state) -> dict:
    """What every answer says it reflects: HEAD, the indexed commit only where it differs,
    whether the index is catching up, and the note, if there is one."""
    said = {"head": short(state.head), "catching_up": state.catching_up}
    if state.indexed_commit != state.head:
        said["indexed_commit"] = short(state.indexed_commit)
    if state.note:
        said["note"] = state.note
    return said


def with_note(answer: dict, note: str) -> dict:
    """The answer with one more sentence in its note."""
    if note:
        answer["note"] = f"{answer['note']}; {note}" if answer.get("note") else note
    return answer


def encode_cursor(kind: str, key: str, offset: int) -> str:
    """A short opaque cursor: which listing, a digest of its arguments, where to go on."""
    return f"{kind[0]}{offset}.{zlib.crc32(key.encode('utf-8', 'surrogatepass')):x}"


def decode_cursor(cursor, kind: str, key: str) -> int:
    """The offset in a cursor made by encode_cursor for the same listing and arguments."""
    if cursor is None:
        return 0
    if isinstance(cursor, str) and cursor[:1] == kind[0]:
        offset, _, digest = cursor[1:].partition(".")
        if offset.isdigit() and \
                digest == f"{zlib.crc32(key.encode('utf-8', 'surrogatepass')):x}":
            return int(offset)
    raise CqError("that cursor does not belong to this listing; ask again without it")


def key_of(*values) -> str:
    """The arguments a cursor is valid for, as one string."""
    return json_text(list(values))


def capped(items: list, budget: int = ANSWER_CAP) -> int:
    """How many of the items fit the text budget (at least one)."""
    used = 0
    for count, item in enumerate(items):
        used += len(json_text(item)) + 1
        if used > budget:
            return max(count, 1)
    return len(items)


def text_arg(args: dict, key: str, required: bool = False) -> str | None:
    """A string argument (CqError if it is of another type, or missing where required)."""
    value = args.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise CqError(f"{key} must be a {'non-empty ' if required else ''}string")
    return value


def line_arg(args: dict, key: str) -> int | None:
    """A line number argument: a whole number from 1."""
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CqError(f"{key} must be a line number: a whole number from 1")
    return value


# -- search -----------------------------------------------------------------------------------

def render_hits(answer: dict) -> str:
    """A search or symbol answer as text."""
    hits = answer.get("results") or []
    text = hits_text(hits) if hits else "no results"
    bodies = [f"{display(h['path'])}:{h['line']}\n{h['body']}" for h in hits if h.get("body")]
    return "\n\n".join([text, *bodies])


@tool(
    "search",
    "Find code by words or identifiers. Each hit gives path:line-end, symbol and its first "
    "lines. Then read a hit with read, or its users with references.",
    {"query": {"type": "string", "description": "words or identifiers, e.g. 'retry "
               "backoff', 'Builder.WriteString'"},
     "path": {"type": "string", "description": "folder, path prefix, glob or one file"},
     "language": {"type": "string"},
     "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
     "cursor": {"type": "string"}},
    ("query",), {"results": "array"},
    render_hits)
def tool_search(session, args: dict, meta: dict, request_id) -> dict:
    """search: the ranking of cq search, the working tree laid over the index."""
    query = text_arg(args, "query", required=True)
    limit = args.get("limit", 10)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise CqError("limit must be a whole number from 1 to 100")
    path, language = text_arg(args, "path"), text_arg(args, "language")
    language = canonical_language(language) if language else None
    key = key_of(query, path, language)
    offset = decode_cursor(args.get("cursor"), "search", key)
    overlay = session.overlay()  # its git status runs while the index is consulted
    state = session.fresh_state(meta, request_id)
    config = session.config()
    index = session.open_index()
    results = search_worktree(index, session.repo, query, overlay, offset + limit + 1,
                              path=path, language=language, demote=config.demote)
    if not results and path and not path_names_files(index, session.repo.git_dir, path):
        raise CqError(f"no indexed file is under path {path_text(path)!r}: give a folder, "
                      "path prefix, glob or file from the repository's top (see files)")
    page = presented(results[offset:offset + limit], corrected_text(query, results),
                     overlay.top, overlay.edited, state.stale,
                     lambda path: doc_at(index, overlay, path))
    shown = capped(page, session.budget)
    answer = with_note({"results": page[:shown], **public_state(state)},
                       correction_note(results))
    if offset + shown < len(results):
        answer["next_cursor"] = encode_cursor("search", key, offset + shown)
    if not overlay.complete:
        with_note(answer, f"more than {config.overlay_max_files} files are edited: they are "
                          "marked, not searched as they are now (cq.overlayMaxFiles)")
    return answer


@tool(
    "symbol",
    "Where a name is defined (plain or qualified: 'parse_config', 'Client.send'); with body, "
    "each definition's source.",
    {"name": {"type": "string"}, "body": {"type": "boolean"}},
    ("name",), {"results": "array"}, render_hits)
def tool_symbol(session, args: dict, meta: dict, request_id) -> dict:
    """symbol: the definitions a (qualified) name names; several when ambiguous."""
    name = text_arg(args, "name", required=True)
    if not SearchQuery(name).last:
        raise CqError("name must be an identifier, plain or qualified (Class.method)")
    with_body = args.get("body", False)
    if not isinstance(with_body, bool):
        raise CqError("body must be true or false")
    state = session.fresh_state(meta, request_id)
    overlay = session.overlay()
    results = [r for r in search_worktree(session.open_index(), session.repo, name, overlay, 50,
                                          named=True)  # the definitions named exactly
               if r["kind"] in DEFINITION_KINDS]  # not an import or heading of that name
    page = presented(results, name, overlay.top, overlay.edited, state.stale)
    for hit in page if with_body else ():
        hit.pop("lines", None)
        hit["body"] = definition_body(session, overlay, hit,
                                      min(BODY_BUDGET, session.budget) // len(page))
    return {"results": page[:capped(page, session.budget)], **public_state(state)}


def definition_body(session, overlay, hit: dict, budget: int) -> str:
    """A hit's whole definition, numbered, as the work tree holds it (cut to budget)."""
    try:
        located = locate(session.open_index(), overlay, hit["path"])
        reading = read_lines(overlay, located, hit["line"], hit.get("end", hit["line"]),
                             budget=budget)
    except CqError as exc:
        return f"(not read: {exc})"
    lines = reading.numbered()
    return lines if reading.next_start is None else \
        f"{lines}\n(cut at line {reading.end}: read the rest with read)"


# -- read, outline, files ---------------------------------------------------------------------

def render_reading(answer: dict) -> str:
    """A read answer as text: where, then the numbered lines."""
    what = answer.get("definition")
    heading = (f"{display(answer['path'])} lines {answer['start']}-{answer['end']} of "
               f"{answer['total_lines']}")
    if what:
        heading += f": {what['kind']} {what['symbol']}"
    if answer["freshness"] != "fresh":
        heading += f" [{answer['freshness']}]"
    others = answer.get("others")
    if others:
        heading += " (also defined at " + ", ".join(str(o["line"]) for o in others) + ")"
    return f"{heading}\n{answer['text']}"


@tool(
    "read",
    "Read a file of the working tree as numbered lines: a definition's whole body by name "
    "(symbol), a line range (start, end), or the file. Long answers give a cursor.",
    {"path": {"type": "string"}, "symbol": {"type": "string"},
     "start": {"type": "integer"}, "end": {"type": "integer"},
     "cursor": {"type": "string"}},
    ("path",), {"path": "string", "start": "integer", "end": "integer",
                "total_lines": "integer", "text": "string"}, render_reading)
def tool_read(session, args: dict, meta: dict, request_id) -> dict:
    """read: numbered lines of a file as it is now."""
    path, symbol = text_arg(args, "path", required=True), text_arg(args, "symbol")
    start, end = line_arg(args, "start"), line_arg(args, "end")
    if symbol and (start or end):
        raise CqError("give symbol or a line range (start, end), not both")
    key = key_of(path, symbol, start, end)
    resume = decode_cursor(args.get("cursor"), "read", key) if args.get("cursor") else None
    state = session.fresh_state(meta, request_id)
    overlay = session.overlay()
    located = locate(session.open_index(), overlay, path)
    reading = read_lines(overlay, located, resume or start, end, symbol, session.budget)
    definition = reading.definition
    answer = {**named_path(reading.path), "language": reading.language,
              "start": reading.start, "end": reading.end, "total_lines": reading.total,
              "text": reading.numbered(),
              "freshness": freshness(reading.path, overlay.edited, state.stale),
              **public_state(state)}
    if definition:
        answer["definition"] = entry_place(definition, reading.language)
    if reading.others:
        answer["others"] = reading.others
    if reading.next_start:
        answer["next_cursor"] = encode_cursor("read", key, reading.next_start)
    return answer


def render_outline(answer: dict) -> str:
    """An outline as text: the file and its summary, its imports, one line per entry."""
    out = [f"{display(answer['path'])} ({answer['language']}, {answer['total']} definitions)"
           + (f": {answer['summary']}" if answer.get("summary") else "")]
    if answer.get("imports"):
        out.append(f"imports {answer['imports']}")
    for e in answer["entries"]:
        where = f"{e['line']}" + (f"-{e['end']}" if e["end"] != e["line"] else "")
        detail = e.get("signature") or ""
        out.append(f"{where} {e['kind']} {e['symbol']}" + (f": {detail}" if detail else "")
                   + (f"  # {e['doc']}" if e.get("doc") else ""))
    return "\n".join(out)


@tool(
    "outline",
    "A file's summary, imports on one line, and every definition (constants and variables "
    "too) with its line range, as the working tree holds it now.",
    {"path": {"type": "string"}, "cursor": {"type": "string"}},
    ("path",), {"path": "string", "summary": "string", "entries": "array"}, render_outline)
def tool_outline(session, args: dict, meta: dict, request_id) -> dict:
    """outline: one file's documentation, as the file is in the working tree now."""
    path = text_arg(args, "path", required=True)
    key = key_of(path)
    offset = decode_cursor(args.get("cursor"), "outline", key)
    state = session.fresh_state(meta, request_id)
    overlay = session.overlay()
    located = locate(session.open_index(), overlay, path)
    found = outline(located, offset, session.budget)
    answer = {**named_path(found.path), "language": found.language,
              "summary": found.summary, "summary_by": found.summary_by,
              **({"imports": found.imports} if found.imports else {}),
              "entries": found.entries, "total": found.total,
              "freshness": freshness(found.path, overlay.edited, state.stale),
              **public_state(state)}
    if found.next_offset is not None:
        answer["next_cursor"] = encode_cursor("outline", key, found.next_offset)
        with_note(answer, f"{found.total - found.next_offset} more definitions")
    return answer


def render_files(answer: dict) -> str:
    """A listing of files as text: one line each."""
    return "\n".join(f"{display(f['path'])} ({f['language']}): {display(f['summary'])}"
                     if f.get("summary") else f"{display(f['path'])} ({f['language']})"
                     for f in answer["files"]) \
        or "no files"


@tool(
    "files",
    "The indexed files under a folder or glob, each with its language and one-line summary.",
    {"path_glob": {"type": "string"}, "cursor": {"type": "string"}},
    (), {"files": "array"}, render_files)
def tool_files(session, args: dict, meta: dict, request_id) -> dict:
    """files: the indexed files under a path, with language and one-line summary."""
    glob = text_arg(args, "path_glob")
    key = key_of(glob)
    offset = decode_cursor(args.get("cursor"), "files", key)
    state = session.fresh_state(meta, request_id)
    matches = path_matcher(glob) or (lambda path: True)
    files = [{**named_path(f.path), "language": f.language,
              "summary": first_line(f.summary)}
             for f in session.open_index().files(session.repo.git_dir) if matches(f.path)]
    if glob and not files:
        raise CqError(f"no indexed file matches {glob!r}; try a folder such as 'src'")
    page = files[offset:offset + 200]
    shown = capped(page, session.budget)
    answer = {"files": page[:shown], **public_state(state)}
    if offset + shown < len(files):
        answer["next_cursor"] = encode_cursor("files", key, offset + shown)
    return answer


# -- references, changes, status --------------------------------------------------------------

def render_references(answer: dict) -> str:
    """References as text: each group under its file and the definition it is in."""
    out = []
    for group in answer["groups"]:
        out.append(display(group["path"]) + (f" in {group['in']}" if group.get("in") else ""))
        out += [f"  {line}" for line in group["lines"]]
    return "\n".join(out) or f"no line holds {answer['name']} as a word"


@tool(
    "references",
    "Where a name is used: every line holding it as a word (lexical, not type-resolved), "
    "grouped by the definition each is in; imports and the definition marked.",
    {"name": {"type": "string"}, "path": {"type": "string"}, "cursor": {"type": "string"}},
    ("name",), {"name": "string", "groups": "array"}, render_references)
def tool_references(session, args: dict, meta: dict, request_id) -> dict:
    """references: the lines that use a name, grouped by enclosing definition."""
    name, path = text_arg(args, "name", required=True), text_arg(args, "path")
    key = key_of(name, path)
    offset = decode_cursor(args.get("cursor"), "references", key)
    state = session.fresh_state(meta, request_id)
    found = references(session.open_index(), session.overlay(), name, path, offset,
                       session.budget)
    groups = [{**named_path(g.path), **({"in": g.within} if g.within else {}),
               "lines": [f"{s.line}" + ("" if s.role == "use" else f" [{s.role}]") +
                         f": {s.text}" for s in g.sites]} for g in found.groups]
    answer = {"name": found.name, "groups": groups, "files": found.files,
              **public_state(state)}
    with_note(answer, reference_note(found))
    if found.next_offset is not None:
        answer["next_cursor"] = encode_cursor("references", key, found.next_offset)
    return answer


def render_changes(answer: dict) -> str:
    """Changes as text: each file and its definitions."""
    since = answer.get("since")
    out = [f"since {since}" if since else "the working tree against HEAD"]
    for f in answer["files"]:
        out.append(f"{display(f['path'])} {f['change']} ({f['where']})")
        out += [f"  {d}" for d in f.get("definitions", ())]
    if answer.get("omitted"):
        out.append(f"and {answer['omitted']} more files")
    return "\n".join(out)


@tool(
    "changes",
    "What changed: files and definitions added, changed or removed in the commits since a "
    "ref (default: the last commit the index moved from) and in the working tree.",
    {"since": {"type": "string", "description": "a branch, tag, sha or e.g. HEAD~3"}},
    (), {"since": ["string", "null"], "files": "array"}, render_changes)
def tool_changes(session, args: dict, meta: dict, request_id) -> dict:
    """changes: files and definitions changed since a ref and in the working tree."""
    since = text_arg(args, "since")
    state = session.fresh_state(meta, request_id)
    found = changes(session.open_index(), session.overlay(), since, session.budget)
    files = [{**named_path(f.path), "change": f.change, "where": f.where,
              **({"definitions": [f"{d.change} {d.kind} {d.symbol} ({d.line})"
                                  for d in f.definitions]} if f.definitions else {})}
             for f in found.files]
    answer = {"since": short(found.since), "files": files, **public_state(state)}
    if found.omitted:
        answer["omitted"] = found.omitted
    return answer


def render_status(answer: dict) -> str:
    """The status as text: the worker, each worktree, the external documenter."""
    out = [f"worker: {answer['worker']}"]
    for w in answer["worktrees"]:
        at = w["head"] if w["indexed_commit"] == w["head"] else \
            f"{w['indexed_commit']} (HEAD {w['head']})"
        out.append(f"{w['git_dir']}: at {at}, {w['files']} files, {w['pending']} pending, "
                   f"{w['failed']} failed")
    if answer.get("summaries"):
        out.append("summaries: " + json_text(answer["summaries"]))
    return "\n".join(out)


@tool(
    "status",
    "Index freshness per worktree (indexed commit vs HEAD), pending and failed files, the "
    "worker's state, the external documenter's progress.", {}, (),
    {"worktrees": "array", "worker": "string", "summaries": ["object", "null"]},
    render_status)
def tool_status(session, args: dict, meta: dict, request_id) -> dict:
    """status: per worktree, indexed commit vs HEAD and counts; the worker's state."""
    index = session.open_index()
    state = session.fresh_state(meta, request_id, wait=False)
    worktrees = []
    for git_dir in worktree_git_dirs(session.repo.common_dir):
        counted = index_state(index, git_dir, cache=session.counts
                              if git_dir == session.repo.git_dir else None)
        worktrees.append({"git_dir": path_text(git_dir), "head": short(counted.head),
                          "indexed_commit": short(counted.indexed_commit),
                          "files": counted.counts["files"],
                          "pending": counted.counts["pending"],
                          "failed": counted.counts["failed"]})
    summaries = summary_progress(index, session.repo.git_dir, session.config())
    if summaries:
        summaries = {k: v for k, v in summaries.items() if k != "failed_files"}
    return {"worktrees": worktrees, "worker": probe_worker(session.repo).state,
            "summaries": summaries, **public_state(state)}

