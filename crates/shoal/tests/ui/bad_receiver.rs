//! Methods must take `&self`: not nothing, not `&mut self`, not `self`.

#[shoal::service]
pub trait Calculator {
    async fn add(a: i64, b: i64) -> i64;
    async fn reset(&mut self);
    async fn close(self);
}

fn main() {}
