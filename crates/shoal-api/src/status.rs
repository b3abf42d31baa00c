//! What `shoal.status` answers: a snapshot of a running service, readable without the runtime.
