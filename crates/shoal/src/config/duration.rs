//! Durations in typed sections, written as the runtime's own keys are (`"10s"`, `"1h 30m"`):
//! `#[serde(with = "shoal::config::duration")]` on a `std::time::Duration` field.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Reads `"250ms"`, `"10s"`, `"1h 30m"`; anything else is an error saying what is expected.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|_| {
        serde::de::Error::custom(format!("expected a duration like \"10s\", got {text:?}"))
    })
}

/// Writes the form [`deserialize`] reads.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*duration).to_string())
}
