//! The center: the fleet's control plane as a library.
//!
//! - [`pki`]: the certificate authority (a root, separate intermediates for agents and for
//!   centers) under `DATA/pki/`, the center's server certificate, the agents' port's TLS.
//! - [`link`]: the agents' port (enrollment, `hello`, heartbeats, package downloads,
//!   renewal) and [`link::Links`], the handle the rest of the center calls agents through
//!   (`exec`, `logs`, the registry, `revoke`).
//!
//! Invariant: the center never depends on `shoal-agent`; what crosses the link is a
//! `shoal_api::fleet` type.

pub mod link;
pub mod pki;
