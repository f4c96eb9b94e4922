"""The workflow steps, one command-line tool each (`python -m stages.<step> --help`).

With AUGMEM_AUDIT_LOG set, every step records the files it opens, writes, renames and removes (augmem.audit; the
tests compare them with what the workflow rules declare)."""
from augmem.audit import install_from_env

install_from_env()
