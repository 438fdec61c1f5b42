"""Numbered schema migrations, one module each (`mNNNN_name.py` with `migrate(db)`), applied in order on open.

Add a migration by adding a module with the next free number; never edit one that has shipped. Then rewrite the
snapshot a new store is made from (`python -c "from skillweave.store import write_schema_snapshot;
write_schema_snapshot()"`; tests/test_schema_snapshot.py fails until it is current).
"""
