"""Run leases: which process continues a run (pid, host, process start, heartbeat), so no two do at once."""


def migrate(db):
    db["run_leases"].create(
        {"run_id": str, "token": str, "pid": int, "host": str, "proc_start": str, "command": str,
         "acquired_at": str, "heartbeat_at": str},
        pk="run_id",
    )
