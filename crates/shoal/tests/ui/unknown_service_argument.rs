//! The attribute itself takes only `crate = "..."`.

#[shoal::service(krate = "shoal")]
pub trait Store {
    async fn get(&self, key: String) -> Option<String>;
}

fn main() {}
