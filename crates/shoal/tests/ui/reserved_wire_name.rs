//! `shoal.` names belong to the methods every server answers itself.

#[shoal::service]
pub trait Health {
    #[shoal(name = "shoal.ping")]
    async fn ping(&self) -> String;
}

fn main() {}
