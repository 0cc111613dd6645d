"""Alembic migrations, shipped inside the package so ``lockgate.store.migrate`` needs no
alembic.ini at run time. Revisions are written by hand against ``schema.py``."""
