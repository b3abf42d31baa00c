//! Arguments are decoded into owned values; only `&Context` may be borrowed.

#[shoal::service]
pub trait Greeter {
    async fn greet(&self, name: &str) -> String;
}

fn main() {}
