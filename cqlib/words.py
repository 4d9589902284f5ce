"""Words: what the index and the queries agree a text, a path or an identifier is made of.

Owns: splitting identifiers into their parts (parse_config, ParseConfig, HTTPServer2, in any
script) and their runs of letters and digits (utf8 of utf8Decode), a file's distinct words, a
path's words, the squashed form of a name, the words a definition is found by (computed once,
in the documenting process that made it), the marked name words that tell cheaply whether any
definition is named by a word, stop words, abbreviations, and how far apart two spellings are
in typing slips (for spelling.py), and which kinds of entry define something.
Must not: touch storage; a change here changes what the index holds (bump SCHEMA_VERSION).
"""

from __future__ import annotations

import os

IDENTIFIER_WORDS: dict = {}  # identifier -> its words, for the life of a process (they repeat)
IDENTIFIER_WORDS_MAX = 4000  # about 1.5 MB (20,000 held the worker's memory 8 MB higher)
RUN_TOGETHER_MIN = 7  # the shortest part of an all-capitals name that may be two words
IDENTIFIER_PATTERNS: list = []  # the separators, and the words of an ASCII part, compiled once
DIGIT_RUN_PATTERN: list = []  # digit_runs' pattern, compiled once


def split_identifier(name: str) -> list[str]:
    """The lowercase words of an identifier: parse_config, ParseConfig, HTTPServer2 -> words;
    in any script (größeBerechnen -> größe, berechnen; 関数 -> 関数)."""
    words = IDENTIFIER_WORDS.get(name)
    if words is None:
        if len(IDENTIFIER_WORDS) >= IDENTIFIER_WORDS_MAX:
            IDENTIFIER_WORDS.clear()
        words = IDENTIFIER_WORDS[name] = identifier_parts(name)
    return list(words)


def identifier_patterns() -> list:
    """The separators of an identifier's parts, and the words of an ASCII part, compiled."""
    import re

    if not IDENTIFIER_PATTERNS:
        IDENTIFIER_PATTERNS[:] = [re.compile(r"[\W_]+"), re.compile(
            r"[A-Z]+(?=[A-Z][a-z]|\d|\b)|[A-Z]?[a-z]+|[A-Z]+|\d+")]
    return IDENTIFIER_PATTERNS


def identifier_parts(text: str) -> list[str]:
    """The lowercase words of every identifier in a text, in order (split_identifier without
    its cache, which costs more than it saves where most names are new).  An ASCII text, most
    of them, takes one match over the whole of it, which finds the parts that splitting at
    its separators would: no match takes a separator, and an uppercase run ends at `_` as at
    the end of a part."""
    separators, ascii_words = identifier_patterns()
    if text.isascii():
        return " ".join(ascii_words.findall(text)).lower().split()
    words = []
    for part in separators.split(text):
        words += ascii_words.findall(part) if part.isascii() else case_runs(part)
    return [w.lower() for w in words if w]


def case_runs(part: str) -> list[str]:
    """A non-ASCII identifier part split where lowercase turns upper or letters turn digits."""
    words, current = [], ""
    for ch in part:
        if current and (ch.isdigit() != current[-1].isdigit() or
                        (ch.isupper() and current[-1].islower())):
            words.append(current)
            current = ""
        current += ch
    return [*words, current] if current else words


FILE_WORDS_MAX = 20_000
WORD_PATTERNS: list = []  # the words of any text, compiled once
# An ASCII text's bytes with every byte that is not part of a word made a space: bytes.split
# then yields its words a fifth faster than the pattern (most code is ASCII).
ASCII_WORD_BYTES = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
ASCII_WORDS_ONLY = bytes(c if c in ASCII_WORD_BYTES else 32 for c in range(256))


def digit_runs(text: str) -> list[str]:
    """The lowercase runs of letters that end in digits inside identifiers split at their
    case changes (`utf8` of `utf8Decode`, `int64` of `Int64Value`, `server2` of
    `HTTPServer2`): kept whole as well as by their parts, so that `utf8` finds them."""
    if not DIGIT_RUN_PATTERN:
        import re

        DIGIT_RUN_PATTERN.append(re.compile(r"(?:[A-Z]?[a-z]+|[A-Z]+)[0-9]+"))
    return [run.lower() for run in DIGIT_RUN_PATTERN[0].findall(text)]


def file_words(text: str) -> str:
    """Every distinct word of a file (identifiers of function bodies, comments and strings
    included; camelCase and UPPER_CASE words also by their parts), first occurrences first:
    the file-level record, so that any word `git grep -w` finds in a file finds the file."""
    if text.isascii():
        tokens = b" ".join(dict.fromkeys(text.encode().translate(ASCII_WORDS_ONLY).split())) \
            .decode()
        words = dict.fromkeys(tokens.lower().split())
        split = [token for token in tokens.split() if not token.islower() and not token.isdigit()]
        # Split together, not token by token: a third of the time on Go, whose names are
        # mostly camelCase.
        words.update(dict.fromkeys(identifier_parts(" ".join(split))))
        words.update(dict.fromkeys(digit_runs(" ".join(split))))
    else:
        if not WORD_PATTERNS:
            import re

            WORD_PATTERNS.append(re.compile(r"\w+"))
        tokens = list(dict.fromkeys(WORD_PATTERNS[0].findall(text)))
        words = dict.fromkeys(token.lower() for token in tokens)
        for token in tokens:
            if not token.islower() and not token.isdigit():
                words.update(dict.fromkeys(split_identifier(token)))
                words.update(dict.fromkeys(digit_runs(token)))
    return " ".join(list(words)[:FILE_WORDS_MAX])


# A definition's squashed name is indexed as a term ending in NAME_MARK, and the words of its
# name as terms beginning with it: terms only named definitions hold (see index/schema.py).
NAME_MARK = "\ue000"
STEMS_ALIKE_AFTER_MARK = frozenset("bcdfghjklmnpqrstvwxz0123456789")


def marks_alike(word: str) -> bool:
    """True if the porter stemmer reduces NAME_MARK + word as it does the word (checked on
    every word of 3 and 4 letters and 300,000 of code): 3 to 61 bytes (FTS5 stems from 3 to
    64, and the mark takes 3), begun by an ASCII consonant (after a vowel or `y` the mark
    would change what the stemmer counts as a syllable), not a number, not `sses` (a suffix
    FTS5 leaves whole only unmarked).  A query word that is not is left out of the check."""
    return 3 <= len(word.encode()) <= 61 and word[0] in STEMS_ALIKE_AFTER_MARK \
        and not word.isdigit() and word != "sses"


def marked_in_name(word: str) -> bool:
    """True if a word of a definition's name is indexed behind NAME_MARK: every word a query
    word that marks_alike could match, stemmed (the same first letter, folded), so more than
    marks_alike takes."""
    return bool(word) and word[0] not in "aeiouy" and not word.isdigit()


def with_search_words(e: dict) -> dict:
    """An entry with the words the index keeps for it (its squashed name, its name's and its
    container's words), computed once: by the documenting process that made it, where one
    did, so that the worker's writing thread does not."""
    if "named" not in e:
        name = e["name"]
        parts = identifier_parts(name)
        # squash(name), sooner: an ASCII name's letters and digits are all in its parts
        e["squashed"] = "".join(parts) if name.isascii() else squash(name)
        e["words"] = name_words(parts, e["squashed"])
        if not name.islower() and any(ch.isdigit() for ch in name):
            have = set(e["words"].split())
            e["words"] = " ".join([e["words"], *(run for run in dict.fromkeys(digit_runs(name))
                                                 if run not in have)])
        if name.isupper() and e.get("doc"):
            e["words"] = " ".join([e["words"], *run_together(parts, e["doc"])])
        e["container_words"] = " ".join(split_identifier(e["container"] or ""))
        # Every word the name and words columns hold: the words column's (the parts and the
        # squashed name) and the name column's own tokens (unicode61 keeps `barBaz` of
        # `foo_barBaz` whole).
        words = dict.fromkeys(e["words"].split())
        words.update(dict.fromkeys(identifier_patterns()[0].split(name.lower())))
        e["named"] = " ".join([NAME_MARK + w for w in words if marked_in_name(w)])
    return e


def run_together(parts: list[str], doc: str) -> list[str]:
    """The words an all-capitals name runs together that its doc spells apart
    (`LZ4_COMPRESSBOUND`, documented with `LZ4_compressBound`: compress, bound), so that the
    name is found by them; each long part split once, where both halves are the doc's words."""
    long_parts = [p for p in parts if len(p) >= RUN_TOGETHER_MIN]
    if not long_parts:
        return []
    vocabulary = set(identifier_parts(doc))
    found = []
    for part in long_parts:
        for cut in range(3, len(part) - 2):
            if part[:cut] in vocabulary and part[cut:] in vocabulary:
                found += [part[:cut], part[cut:]]
                break
    return found


def squash(text: str) -> str:
    """An identifier reduced to lowercase letters and digits, so its spellings compare equal."""
    return identifier_patterns()[0].sub("", text.lower())


def name_words(parts: list[str], whole: str) -> str:
    """The words column of a definition: its identifier parts and its squashed name."""
    return " ".join([*parts, whole] if whole and [whole] != parts else parts)


# The kinds of entry that define something (an import or a heading does not): what the
# documenters make, what a search ranks first and what a symbol lookup keeps.  Here, not with
# the documenters, so that a search need not import the whole language table.
DEFINITION_KINDS = frozenset({"class", "function", "method", "struct", "interface", "enum",
                              "trait", "type", "macro", "module", "constant", "variable",
                              "record", "impl"})
STOP_WORDS = frozenset({
    "a", "about", "after", "also", "an", "and", "are", "as", "at", "be", "before", "by", "can",
    "do", "does", "for", "from", "how", "i", "if", "in", "into", "is", "it", "its", "of", "on",
    "onto", "or", "should", "so", "that", "the", "then", "this", "to", "via", "was", "we",
    "what", "when", "where", "which", "who", "why", "will", "with", "within"})


# The words people ask in, and the abbreviations code writes them as (space-separated): a
# query word of either side also finds the others, ranked below the word as written.  Only
# queries read this table (the index keeps words as written), so a line may be added freely;
# but never an abbreviation that is a keyword or type of some language (def, fn, var, int,
# str, bool, char, del, impl, async), which would match every signature.
ABBREVIATIONS = {
    "address": "addr", "allocate": "alloc", "allocation": "alloc", "argument": "arg args",
    "attribute": "attr attrs", "authentication": "auth", "authorization": "auth authz",
    "buffer": "buf buff", "calculate": "calc", "certificate": "cert", "command": "cmd",
    "compare": "cmp", "configuration": "config cfg conf", "context": "ctx",
    "count": "cnt", "current": "cur curr", "database": "db", "decrement": "dec",
    "description": "desc", "destination": "dst dest",
    "directory": "dir", "document": "doc docs", "environment": "env", "error": "err",
    "execute": "exec", "expression": "expr", "extension": "ext",
    "generate": "gen", "identifier": "id ident", "image": "img",
    "increment": "inc", "index": "idx", "information": "info", "initialize": "init",
    "initialise": "init", "iterator": "iter", "length": "len",
    "library": "lib", "maximum": "max", "memory": "mem", "message": "msg", "minimum": "min",
    "number": "num", "object": "obj", "operator": "op", "operation": "op",
    "package": "pkg", "parameter": "param params", "pointer": "ptr", "position": "pos",
    "previous": "prev", "property": "prop props", "receive": "recv", "reference": "ref",
    "request": "req", "response": "resp res", "sequence": "seq",
    "source": "src", "specification": "spec", "statistics": "stats",
    "synchronize": "sync", "temporary": "tmp temp", "utility": "util utils",
    "value": "val", "version": "ver", "window": "win"}
WORD_FORMS: dict = {}  # word -> the other forms of it, made from ABBREVIATIONS at first use


def other_forms(word: str) -> tuple:
    """The abbreviations of a word, or the words of an abbreviation (ABBREVIATIONS), a plural
    taken as its singular: `maximum` -> ("max",); `max` -> ("maximum",); `extensions` ->
    ("ext",)."""
    if not WORD_FORMS:
        for full, short in ABBREVIATIONS.items():
            for abbreviation in short.split():
                WORD_FORMS.setdefault(full, []).append(abbreviation)
                WORD_FORMS.setdefault(abbreviation, []).append(full)
    for form in (word, word[:-1] if word.endswith("s") else "",
                 word[:-2] if word.endswith("es") else ""):
        if form in WORD_FORMS:
            return tuple(f for f in dict.fromkeys(WORD_FORMS[form]) if f != word)
    return ()


# Keys next to each other on a QWERTY keyboard: a typo replaces a letter by a neighbour (a
# letter replaced by a far one is more often another word: `regains` is not `remains`).
KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOUR_KEYS: dict = {}


def neighbour_keys() -> dict:
    """Each letter -> the letters on the keys around it (made once)."""
    if not NEIGHBOUR_KEYS:
        for r, row in enumerate(KEYBOARD_ROWS):
            for i, key in enumerate(row):
                NEIGHBOUR_KEYS[key] = "".join(
                    other[j] for o, other in enumerate(KEYBOARD_ROWS) if abs(o - r) <= 1
                    for j in range(max(0, i - 1), min(len(other), i + 2)) if other[j] != key)
    return NEIGHBOUR_KEYS


def edit_distance(a: str, b: str, limit: int) -> int:
    """The typing slips (a letter inserted or deleted, replaced by a neighbouring key, or two
    neighbours swapped; a letter replaced by a far key counts two) that turn a into b, or
    limit + 1 once it is clear there are more than limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    near, over = neighbour_keys(), limit + 1
    # Only the cells within `limit` of the diagonal can stay within limit: the rest are
    # `over` (a band, not the whole table).
    before, row = None, [j if j <= limit else over for j in range(len(b) + 1)]
    for i, ca in enumerate(a, 1):
        current = [i if i <= limit else over] + [over] * len(b)
        for j in range(max(1, i - limit), min(len(b), i + limit) + 1):
            cb = b[j - 1]
            replace = 0 if ca == cb else 1 if cb in near.get(ca, "") else 2
            cost = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + replace)
            if before is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, before[j - 2] + 1)
            current[j] = min(cost, over)
        if min(current) > limit:
            return over
        before, row = row, current
    return row[-1]


def one_slip_away(word: str) -> set[str]:
    """Every spelling one typing slip from a lowercase word (a letter inserted, deleted, or
    replaced by a neighbouring key, or two neighbours swapped)."""
    letters, near = "abcdefghijklmnopqrstuvwxyz", neighbour_keys()
    cuts = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return {*(a + b[1:] for a, b in cuts if b),
            *(a + b[1] + b[0] + b[2:] for a, b in cuts if len(b) > 1),
            *(a + c + b[1:] for a, b in cuts if b for c in near.get(b[0], "")),
            *(a + c + b for a, b in cuts for c in letters)} - {word}


PATH_WORDS: dict = {}  # path -> its words, for the life of a process (paths repeat a lot)


def path_words(path: str) -> str:
    """The text paths_fts holds for a path: the words of its folders and file name."""
    return " ".join(identifier_parts(os.path.splitext(path)[0]))


def words_of_path(path: str) -> set[str]:
    """The words of a path's folders and file name (its extension left out)."""
    words = PATH_WORDS.get(path)
    if words is None:
        words = PATH_WORDS[path] = set(path_words(path).split())
        if len(PATH_WORDS) > 200_000:
            PATH_WORDS.clear()
    return words
