//! Two methods under one wire name.

#[shoal::service]
pub trait Store {
    async fn get(&self, key: String) -> Option<String>;
    #[shoal(name = "get")]
    async fn fetch(&self, key: String) -> Option<String>;
}

fn main() {}
