"""The trainers' migration set: checkpoints, evaluations and CHES scores (m0070), LESS datastores and selections
(m0080), topic models and unlearning requests (m0090). The store applies it with the other sets on open
(store/__init__.py `migration_modules`); the names keep the numbers they shipped with."""
