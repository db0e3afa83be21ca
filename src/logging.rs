//! Logging for both programs: warnings by default for commands, `corridor=info` for the
//! long-running processes; `RUST_LOG` overrides either.

/// `verbose` counts `-v`; `daemon` is true for the processes whose stderr is a log file.
pub fn init(verbose: u8, daemon: bool) {
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "corridor=info",
        (2, _) => "corridor=debug",
        _ => "corridor=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!daemon)
        .init();
}
