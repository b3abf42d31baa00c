//! A generic service trait cannot be served.

#[shoal::service]
pub trait Store<T> {
    async fn get(&self, key: String) -> Option<String>;
}

fn main() {}
