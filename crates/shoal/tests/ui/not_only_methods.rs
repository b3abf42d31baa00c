//! Associated items other than methods have no place on the wire.

#[shoal::service]
pub trait Store {
    const LIMIT: usize;
    async fn get(&self, key: String) -> Option<String>;
}

fn main() {}
