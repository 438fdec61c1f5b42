"""Numbered schema migrations, one module each (`mNNNN_name.py` with `migrate(db)`), applied in order on open.

Add a migration by adding a module with the next free number; never edit one that has shipped.
"""
