"""The lease-queue core: every queue of the router claims, sweeps, backs off and wakes here.

- `claims`: how rows are taken (leased, inside a transaction, or in order), generated from a
  small description of each queue's table; the only module whose SQL skips locked rows.
- `backoff`: the one retry delay every queue uses.
- `wakeups`: NOTIFY between processes, and within a process one idle loop at a time.
- `loops`: the one loop framework every queue worker runs on.

The core names no channel and no table of its own; the store modules describe their tables.
"""
