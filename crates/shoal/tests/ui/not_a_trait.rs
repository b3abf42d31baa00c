//! The attribute on a struct.

#[shoal::service]
pub struct Calculator {
    total: i64,
}

fn main() {}
