//! The context is shared with the server: it is borrowed, never mutably.

use shoal::Context;

#[shoal::service]
pub trait Greeter {
    async fn greet(&self, ctx: &mut Context, name: String) -> String;
}

fn main() {}
