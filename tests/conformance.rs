//! The conformance suite under `cargo nextest`: the guide's promises as ordered, named cases.
//!
//! Configuration comes from `DYNAMO_CONFORMANCE_*` variables and the file named by
//! `DYNAMO_CONFORMANCE_CONFIG`. Listing is static; the first case that needs the cluster, a stage
//! or the graph brings it up, and every other case (each in its own process) reuses it.

use std::path::Path;

use harness::config::{Config, ConfigLayer};

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let config = match Config::load(ConfigLayer::default(), None) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let supervisor = Path::new(env!("CARGO_BIN_EXE_dynamo-conformance"));
    libtest_mimic::run(&args, harness::suite::trials(&config, supervisor, None)).exit_code()
}
