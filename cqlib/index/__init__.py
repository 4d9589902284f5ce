"""The index: SQLite + FTS5 in index.db, the only place in cq that holds SQL.

Owns: one concern a module: database.py (opening cq's SQLite files safely, damage, repair),
schema.py (the tables and how a definition is written), store.py (the worktrees' maps and the
documentation), summaries.py (the external documenter's answers) and queries.py (the reads
behind a search).  Documentation is stored once per blob; each worktree has its own
path -> blob map, so results always match the worktree that asks.
Must not: rank results, call git, or be imported by a hot path (it imports sqlite3).
"""
