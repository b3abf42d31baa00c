//! Misspelled or unknown method attributes.

#[shoal::service]
pub trait Store {
    #[shoal(idempotant)]
    async fn get(&self, key: String) -> Option<String>;
    #[shoal(notify, notify)]
    async fn touch(&self, key: String);
}

fn main() {}
