"""The providers' migration set: batch jobs and their requests (m0121, `--batch`). The store applies it with the
other sets on open (store/__init__.py `migration_modules`); the name keeps the number it shipped with."""
