//! A generic method cannot be decoded into.

#[shoal::service]
pub trait Store {
    async fn put<T: serde::de::DeserializeOwned>(&self, value: T);
}

fn main() {}
