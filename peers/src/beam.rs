//! The BEAM peer, `elixir_registry`: Elixir's `Registry` with
//! `DynamicSupervisor`s (peers/beam/registry_bench.exs), run with the
//! `elixir` of Debian's packages as a child process that prints the same
//! JSON lines as the Rust systems. `peers/bench.sh` installs Elixir when it
//! is missing; without it the system is skipped with a note.

use std::process::Command;

/// The system's name in the tables.
pub const SYSTEM: &str = "elixir_registry";

/// The script, by absolute path: the bench runs in the package directory,
/// the parent may not.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/beam/registry_bench.exs");

/// Whether an `elixir` that runs is on the PATH.
pub fn available() -> bool {
    Command::new("elixir")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The command that runs the BEAM peer on `n` ids (`m` round trips, `churn`
/// W9 cycles on `pool` ids); `scale`: the scale tier's subset, its shutdown
/// waited for at most `cap`.
pub fn command(
    n: usize,
    m: usize,
    churn: usize,
    pool: usize,
    scale: Option<std::time::Duration>,
) -> Command {
    let mut cmd = Command::new("elixir");
    // The default limit of 262,144 processes is below the scale tier's N.
    cmd.args(["--erl", "+P 20000000", SCRIPT])
        .args(["--n", &n.to_string(), "--m", &m.to_string()])
        .args(["--churn", &churn.to_string(), "--pool", &pool.to_string()]);
    if let Some(cap) = scale {
        cmd.args(["--scale", "--cap", &cap.as_secs().to_string()]);
    }
    cmd
}
