//! A one-way method has no reply to carry a value.

#[shoal::service]
pub trait Log {
    #[shoal(notify)]
    async fn record(&self, line: String) -> bool;
}

fn main() {}
