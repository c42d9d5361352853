//! What a run of the `peers` bench was, written at the top of its `--json`
//! file: the tier and mode, when it started and ended (UTC), the commit it
//! measured, the cores, and the machine's load average as the run went.
//!
//! The load is the 1-minute load average of `/proc/loadavg`, sampled before
//! the first child process and before each later one; the run's own
//! children add up to 2 to it while they measure, so the figure before the
//! first child is the one that tells how busy the machine was with other
//! work.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The facts of one run, gathered as it goes.
pub struct RunInfo {
    tier: &'static str,
    mode: &'static str,
    runs: usize,
    started: String,
    commit: String,
    loads: Vec<f64>,
}

impl RunInfo {
    /// Starts the record of a run of `tier` ("standard" or "scale"), quick
    /// or full, of `runs` runs per system; samples the load once.
    pub fn start(tier: &'static str, quick: bool, runs: usize) -> Self {
        let mut info = RunInfo {
            tier,
            mode: if quick { "quick" } else { "full" },
            runs,
            started: utc_now(),
            commit: commit(),
            loads: Vec::new(),
        };
        info.sample_load();
        info
    }

    /// Samples the 1-minute load average (nothing where `/proc/loadavg`
    /// cannot be read).
    pub fn sample_load(&mut self) {
        if let Some(l) = load1() {
            self.loads.push(l);
        }
    }

    /// The load before the run and its range over the samples, as printed
    /// under a run's table.
    pub fn load_summary(&self) -> String {
        match self.load_range() {
            Some((before, min, max)) => {
                format!("load average {before:.2} before the run, {min:.2}–{max:.2} during it")
            }
            None => "load average not available".to_owned(),
        }
    }

    fn load_range(&self) -> Option<(f64, f64, f64)> {
        let before = *self.loads.first()?;
        let min = self.loads.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((before, min, max))
    }

    /// The `--json` document: this record with the run's figures (`rows`)
    /// under it; the end time and a last load sample are taken now.
    pub fn finish(&mut self, rows: Vec<serde_json::Value>) -> serde_json::Value {
        self.sample_load();
        let load = self.load_range().map(
            |(before, min, max)| serde_json::json!({ "before": before, "min": min, "max": max }),
        );
        serde_json::json!({
            "tier": self.tier,
            "mode": self.mode,
            "runs": self.runs,
            "started": self.started,
            "finished": utc_now(),
            "commit": self.commit,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "load": load,
            "rows": rows,
        })
    }
}

/// The 1-minute load average.
fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The short hash of the workspace's HEAD, with " + changes" when files
/// other than documents (`*.md`, the guide, with the charts and the JSON of
/// earlier runs in it) differ from it; "unknown" outside a git checkout.
fn commit() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(hash) = git(&["rev-parse", "--short=7", "HEAD"]) else {
        return "unknown".to_owned();
    };
    let changes = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":(exclude)*.md",
        ":(exclude)guide",
    ]);
    match changes {
        Some(c) if c.is_empty() => hash,
        _ => format!("{hash} + changes"),
    }
}

/// Now, as "YYYY-MM-DD HH:MM UTC".
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_minute(secs)
}

/// `secs` after the Unix epoch as "YYYY-MM-DD HH:MM UTC".
fn utc_minute(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_minute_gives_the_calendar_date_and_time() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 (a leap day of a century leap year) 23:59:59.
        assert_eq!(utc_minute(951_868_799), "2000-02-29 23:59 UTC");
        assert_eq!(utc_minute(951_868_800), "2000-03-01 00:00 UTC");
        // 2026-12-07 06:30:00.
        assert_eq!(utc_minute(1_796_625_000), "2026-12-07 06:30 UTC");
    }

    #[test]
    fn the_json_record_carries_the_load_before_and_its_range() {
        let mut info = RunInfo {
            tier: "standard",
            mode: "full",
            runs: 5,
            started: "2026-12-07 06:30 UTC".to_owned(),
            commit: "abc1234".to_owned(),
            loads: vec![1.5, 3.0, 0.5],
        };
        let doc = info.finish(vec![serde_json::json!({"system": "s"})]);
        assert_eq!(doc["load"]["before"], 1.5);
        assert!(doc["load"]["min"].as_f64().unwrap() <= 0.5);
        assert!(doc["load"]["max"].as_f64().unwrap() >= 3.0);
        assert_eq!(doc["tier"], "standard");
        assert_eq!(doc["rows"][0]["system"], "s");
    }
}
