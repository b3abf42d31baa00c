//! Reading the link's MessagePack values as `shoal-api` types through `rmp-serde`, which
//! takes an enum's unit variant written as a string (`"ok"`) as serde writes it; `rmpv`'s own
//! value deserializer does not.

use serde::de::DeserializeOwned;

/// `value` as a `T`; the error says what did not fit.
pub(crate) fn from_value<T: DeserializeOwned>(value: rmpv::Value) -> Result<T, String> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &value).map_err(|e| e.to_string())?;
    rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
}

/// The one argument of a link call or notification.
pub(crate) fn arg<T: DeserializeOwned>(
    method: &str,
    params: Vec<rmpv::Value>,
) -> Result<T, shoal_rpc::RpcError> {
    if params.len() != 1 {
        return Err(shoal_rpc::RpcError::invalid_params(format!(
            "{method} takes 1 argument, got {}",
            params.len()
        )));
    }
    let value = params.into_iter().next().expect("one argument");
    from_value(value).map_err(|e| shoal_rpc::RpcError::invalid_params(format!("{method}: {e}")))
}
