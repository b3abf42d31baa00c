//! Timers: every N, at day/hour/minute boundaries with an offset, and cron with seconds.
