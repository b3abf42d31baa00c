//! What the agent answers and takes: apps, install reports, versions, backups, cron jobs and runs, log queries.
