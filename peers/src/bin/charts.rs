//! Draws the chart of a saved run of the `peers` bench:
//!
//! ```text
//! cargo run --release -p gen_registry_peers --bin charts -- JSON OUTDIR
//! ```
//!
//! JSON is the file the bench wrote with `--json` (the committed runs are in
//! guide/src/benchmarks/); the chart goes into OUTDIR as `standard.svg` or
//! `scale.svg`, after the run's tier. See `gen_registry_peers::charts`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [json, out_dir] = args.as_slice() else {
        eprintln!("usage: charts JSON OUTDIR (JSON: a run written by the peers bench's --json)");
        return ExitCode::from(2);
    };
    match gen_registry_peers::charts::write_chart(Path::new(json), Path::new(out_dir)) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("charts: {json}: {e}");
            ExitCode::FAILURE
        }
    }
}
