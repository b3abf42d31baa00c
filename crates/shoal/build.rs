//! Lays out the examples' code with the functions the hello service runs first
//! (`examples/hello.layout`; see `layout.rs`).

#[path = "layout.rs"]
mod layout;

fn main() {
    layout::lay_out("examples/hello.layout", layout::Targets::Examples);
}
