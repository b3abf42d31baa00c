//! Lays out the `shoal` binary's code with the functions its agent runs first
//! (`agent.layout`; see `crates/shoal/layout.rs`).

#[path = "../shoal/layout.rs"]
mod layout;

fn main() {
    layout::lay_out("agent.layout", layout::Targets::Bins);
}
