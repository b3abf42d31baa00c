//! decode.rs: a MessagePack value read as a Rust type, the one way shoal's client, its
//! servers' arguments and the fleet's link do it.
//!
//! rmpv's own deserializer reads an enum only from an array or a map, so a unit variant sent
//! as its name (how rmp-serde, and most MessagePack libraries, write `enum State { Running }`)
//! would be refused. A value with text in it is therefore read through rmp-serde, which takes
//! both forms; a value without text cannot hold such a variant and is read directly.

use rmpv::Value;
use serde::de::DeserializeOwned;

/// Reads `value` as a `T`; the error says what did not fit.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    if !has_text(&value) {
        return rmpv::ext::from_value(value).map_err(|e| e.to_string());
    }
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &value).expect("writing to a Vec does not fail");
    rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Whether a string appears anywhere but as a map's key.
fn has_text(value: &Value) -> bool {
    match value {
        Value::String(_) => true,
        Value::Array(items) => items.iter().any(has_text),
        Value::Map(entries) => entries.iter().any(|(_, v)| has_text(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum State {
        Running,
        Stopped,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct App {
        name: String,
        state: State,
        restarts: u32,
    }

    #[test]
    fn unit_variants_written_as_names_read_back_nested_or_not() {
        let app = App {
            name: "web".into(),
            state: State::Running,
            restarts: 2,
        };
        // As rmp-serde (and so a shoal server) writes it: the variant as its name.
        let packed = rmp_serde::to_vec_named(&app).unwrap();
        let value = rmpv::decode::read_value(&mut &packed[..]).unwrap();
        assert!(rmpv::ext::from_value::<App>(value.clone()).is_err());
        assert_eq!(from_value::<App>(value).unwrap(), app);
        let packed = rmp_serde::to_vec_named(&vec![State::Stopped]).unwrap();
        let value = rmpv::decode::read_value(&mut &packed[..]).unwrap();
        assert_eq!(
            from_value::<Vec<State>>(value).unwrap(),
            vec![State::Stopped]
        );
        assert_eq!(
            from_value::<(u8, bool)>(Value::from(vec![Value::from(1), Value::from(true)])).unwrap(),
            (1, true)
        );
        assert!(from_value::<u8>(Value::from("x")).is_err());
    }
}
