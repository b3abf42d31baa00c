//! A method named like one of the generated client's own methods.

#[shoal::service]
pub trait Factory {
    async fn new(&self, kind: String) -> u64;
}

fn main() {}
