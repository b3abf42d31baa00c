//! The one argument of a link call or notification, read as its `shoal-api` type through
//! `shoal_rpc::decode` (which takes an enum's unit variant sent as its name).

use serde::de::DeserializeOwned;

/// The one argument of `method`; an error names the method and what did not fit.
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
    shoal_rpc::decode::from_value(value)
        .map_err(|e| shoal_rpc::RpcError::invalid_params(format!("{method}: {e}")))
}
