//! `#[shoal::service]`: turns a trait into a service whose server side dispatches MessagePack-RPC
//! calls to an implementation and whose client side is a typed stub. Use it through the `shoal`
//! crate, which re-exports it.

mod expand;
mod model;
mod type_name;

use proc_macro::TokenStream;

/// Makes a trait a shoal service.
///
/// For `trait Calculator` it generates, beside the trait (which gains `Send + Sync + 'static`
/// and whose `async fn`s return `Send` futures):
///
/// - `CalculatorServer<T: Calculator>`: `new(T)`, `from_arc(Arc<T>)`, and an implementation of
///   `shoal::rpc::Dispatch` that decodes positional arguments, calls `T` and encodes the reply;
/// - `CalculatorClient`: wraps a `shoal::rpc::Client` with `new`, `with_timeout`, `with_key`,
///   `client`, and one `async fn` per method returning `Result<_, shoal::rpc::Error>`.
///
/// Method attributes, combinable in one `#[shoal(...)]`:
///
/// - `notify`: one-way; the method returns `()` and the client sends a notification;
/// - `blocking`: a plain `fn` run on the server's bounded blocking pool;
/// - `idempotent`: the client may retry the call after it may have been sent;
/// - `name = "wire_name"`: the name on the wire instead of the Rust method name.
///
/// A `&Context` parameter is filled in by the server and is not part of the wire signature. A
/// method returning `Result<T, E>` with `E: Into<RpcError>` answers `Err` with an error reply.
///
/// `#[shoal::service(crate = "path::to::shoal")]` names the facade crate when it is not
/// reachable as `::shoal`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::service(attr.into(), item.into()).into()
}
