"""Spelling: the word the index holds nearest a query word it does not hold.

Owns: telling a misspelt query word (one no file, or hardly any, holds) from a word, finding
the index's word nearest it (a typing slip away, by the index's own vocabulary, stemmed as it
stores words), the word as a file writes it, and what an answer says of the correction.
Must not: rank (search.py takes a correction as another form of the word) or hold SQL
(index/queries.py reads the vocabulary).
"""

from __future__ import annotations

from cqlib.index.queries import held_terms, stem_of, terms_starting, text_holding
from cqlib.words import edit_distance, one_slip_away

# Typos: a word of at least TYPO_MIN_LENGTH letters held by at most TYPO_RARE_ROWS files is
# searched with the nearest word the index holds in TYPO_COMMONER times as many (or any, where
# none holds it): one typing slip away (see edit_distance), two from TYPO_TWO_EDITS_FROM
# letters, sharing its first TYPO_SAME_START letters, among the TYPO_SCAN most held of the
# index's words (about 0.1 s at most for the edits of that many).
TYPO_MIN_LENGTH = 4
TYPO_RARE_ROWS = 2
TYPO_COMMONER = 20
TYPO_TWO_EDITS_FROM = 7
TYPO_SAME_START = 3
TYPO_SCAN = 2_000


def corrections(db, terms: list, held: dict[str, tuple[str, int]]) -> dict[int, str]:
    """For each term (by its number) whose word no file (or hardly any) holds, the nearest
    word the index holds in many more (TYPO_* above): `recieve` -> `receive`, `conection` ->
    `connection`.  The search covers the word by it as by an abbreviation, without the bonus
    of a word as typed.  `held` has each word's term and the rows holding it (word_terms)."""
    found = {}
    for n, term in enumerate(terms):
        word = term.words[0]
        if len(term.words) > 1 or term.prefix or term.forms or len(word) < TYPO_MIN_LENGTH \
                or not word.isalpha():
            continue
        stem, rows = held.get(word, ("", 0))
        if not stem or rows > TYPO_RARE_ROWS:
            continue
        least = max(1, rows * TYPO_COMMONER)
        near = nearest_term(db, stem, least)
        # A word some file holds is likely a word: only a near stem corrects it, not a slip
        # that makes another word of it (`serve`, `server`).
        surface = surface_word(db, near) if near else \
            None if rows else respelt_word(db, word, least)
        if surface:
            found[n] = surface
    return found


def corrections_made(results: list[dict]) -> dict:
    """The corrections a search made (typed word -> word searched), as its results say."""
    return (results[0].get("corrected") or {}) if results else {}


def correction_note(results: list[dict]) -> str:
    """What an answer says of the corrections its search made ('' if none)."""
    return "; ".join(f"few or no files hold {typed!r}: searched for {used!r} too"
                     for typed, used in corrections_made(results).items())


def corrected_text(text: str, results: list[dict]) -> str:
    """A query with the words its search corrected (see corrections) as searched."""
    import re

    for typed, used in corrections_made(results).items():
        text = re.sub(rf"\b{re.escape(typed)}\b", used, text, flags=re.IGNORECASE)
    return text


def nearest_term(db, stem: str, rows_at_least: int) -> str | None:
    """The index's term nearest a stemmed word (fewest edits, then most rows), among those
    that share its first letters and are held by at least rows_at_least rows; None if none
    is within the edits a word of its length may have."""
    limit = 1 if len(stem) < TYPO_TWO_EDITS_FROM else 2
    best, best_key = None, None
    lengths = (len(stem) - limit, len(stem) + limit)
    for term, rows in terms_starting(db, stem[:TYPO_SAME_START], lengths, rows_at_least,
                                     TYPO_SCAN):
        if term == stem:
            continue
        distance = edit_distance(stem, term, limit)
        if distance <= limit and (best_key is None or (distance, -rows) < best_key):
            best, best_key = term, (distance, -rows)
    return best


def respelt_word(db, word: str, rows_at_least: int) -> str | None:
    """The spelling one typing slip from the word as typed whose term the index holds in the most
    rows (at least rows_at_least); None if none.  Where a typo changes how the stemmer cuts
    a word (`valdation` is stemmed `valdat`, `validation` `valid`), stems are too far apart
    to compare."""
    edits = sorted(one_slip_away(word.lower()))
    held = [(rows, term) for term, rows in held_terms(db, edits) if rows >= rows_at_least]
    if not held:
        return None
    term = max(held)[1]
    return next((e for e in edits if e[:2] == term[:2] and stem_of(db, e) == term), term)


def surface_word(db, term: str) -> str:
    """A word as written in a file that the index stores as this stemmed term (the shortest
    such: `receive` for `receiv`), or the term itself."""
    import re

    found = re.findall(rf"(?<![^\W\d_]){re.escape(term[:max(TYPO_SAME_START, len(term) - 1)])}"
                       r"[^\W\d_]*", text_holding(db, term), re.IGNORECASE)
    for word in sorted({w.lower() for w in found}, key=len):
        if stem_of(db, word) == term:
            return word
    return term
