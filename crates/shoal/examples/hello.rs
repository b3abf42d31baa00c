//! The smallest shoal service: `greet(name)` answers `"<greeting>, <name>"`, with the greeting
//! read from the `[hello]` section of the configuration, so a reload (SIGHUP) shows from outside.
//!
//! ```text
//! cargo run --release -p shoal --example hello -- --config crates/shoal/examples/hello.toml
//! shoal call 127.0.0.1:7000 greet '"world"'
//! ```

use serde::Deserialize;
use shoal::{App, Live};

#[shoal::service]
pub trait Hello {
    async fn greet(&self, name: String) -> String;
}

/// The `[hello]` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloConfig {
    #[serde(default = "default_greeting")]
    pub greeting: String,
}

fn default_greeting() -> String {
    "Hello".into()
}

struct Greeter {
    config: Live<HelloConfig>,
}

impl Hello for Greeter {
    async fn greet(&self, name: String) -> String {
        format!("{}, {name}", self.config.get().greeting)
    }
}

/// The application, for `main` and for tests.
pub fn app() -> App {
    App::new("hello", env!("CARGO_PKG_VERSION")).setup(|app| {
        let config = app.section::<HelloConfig>("hello")?;
        app.serve(HelloServer::new(Greeter { config }));
        Ok(())
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> shoal::Exit {
    app().run().await
}
