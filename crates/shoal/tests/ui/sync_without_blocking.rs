//! A plain `fn` would block the executor unless it is marked blocking.

#[shoal::service]
pub trait Hasher {
    fn hash(&self, data: Vec<u8>) -> u64;
}

fn main() {}
