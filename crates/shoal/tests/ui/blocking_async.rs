//! A blocking method runs on a thread of its own and must be a plain `fn`.

#[shoal::service]
pub trait Hasher {
    #[shoal(blocking)]
    async fn hash(&self, data: Vec<u8>) -> u64;
}

fn main() {}
