//! Supervision end to end, with real processes on this machine: restart policies and
//! backoff, stopping process groups, `start_after`, health checks, output capture, and
//! adoption by a new agent after the old one is killed, and what a started program inherits.

mod adopt;
mod common;
mod health;
mod logs;
mod restart;
mod spawn;
mod stop;
