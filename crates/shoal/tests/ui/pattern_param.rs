//! Parameters need plain names: they label the arguments in error messages.

#[shoal::service]
pub trait Geometry {
    async fn area(&self, (w, h): (u32, u32)) -> u64;
}

fn main() {}
