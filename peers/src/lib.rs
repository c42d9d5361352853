//! Side-by-side benchmark of `gen_registry` against its peers on the
//! standard workload W1–W11 of `shared/reference/peers.md`.
//!
//! Run it as
//! `cargo bench -p gen_registry_peers --bench peers -- [--quick] [--scale [--sizes N,N…]] [--json FILE [--charts DIR]] [--markdown FILE] [--system NAME[,NAME…]] [--runs K]`.
//!
//! `--json FILE` writes the run as a JSON object: its facts (`tier`,
//! `mode`, `runs`, `started`, `finished`, `commit`, `cores`, and `load`:
//! the 1-minute load average `before` the run and its `min` and `max`
//! while it ran) and its `rows`, one `{system, metric, value, unit}` per
//! figure (with `n` in the scale tier). `--charts DIR` then draws that file
//! into DIR (module [`charts`]); `peers/bench.sh` does both.
//!
//! The parent process runs every system in a child process of its own (it
//! re-executes `std::env::current_exe()` with `--system NAME` and
//! `GEN_REGISTRY_PEERS_CHILD=1`), so RSS figures never mix; the child
//! reports one JSON object per line on stdout and its progress on stderr.
//! A full run starts each child 5 times (a fresh process each time) and
//! reports each metric's median; `--quick` runs each once, with N = M =
//! 20,000 and 200,000 churn cycles.
//!
//! Metric ids (the `"metric"` field of `--json`):
//!
//! | id | what | unit |
//! |---|---|---|
//! | `N` | ids started in W1 | ids |
//! | `W1` | starts per second, N fresh ids, until each worker ran its init and is registered | starts/s |
//! | `W2` | (RSS after W1 − RSS before) ÷ N | B/worker |
//! | `W3` | lookup hit on 1 thread, shuffled order, handle cloned | ns/op |
//! | `W4` | aggregate lookups on 2 threads | Mops/s |
//! | `W4x` | W4 ÷ the 1-thread rate of W3 | x |
//! | `W5` | lookup_or_start hit | ns/op |
//! | `W6p50`, `W6p99` | call round trip to one worker, from inside the runtime | µs |
//! | `W6tp50`, `W6tp99` | the same call from a tokio task (on a tokio runtime with 2 workers), whatever runs the worker | µs |
//! | `W7` | lookup + call, a different worker each time | µs/op |
//! | `W8` | stop every id, each awaited until terminated | stops/s |
//! | `W8left` | entries (or live procs) left after W8 (must be 0) | entries |
//! | `W9` | churn: start → one call → stop on ids from a pool of 10,000 | cycles/s |
//! | `W9cycles` | churn cycles run | cycles |
//! | `W9rss` | RSS growth from 10 % of the cycles to the end | KiB |
//! | `W9leak` | `W9rss` per cycle run after the 10 % mark | B/cycle |
//! | `W10count`, `W10reduce`, `W10list` | count; reduce and to_list over N | ns; ms; ms |
//! | `W11` | inits that ran when 64 callers lookup_or_start one fresh id (must be 1) | inits |
//! | `errors` | failed calls or stops during W9 (must be 0) | errors |
//!
//! An absent value (`"value": null`, printed "—") means the system has no
//! such operation.
//!
//! `elixir_registry` is the BEAM peer (Elixir's `Registry` with
//! `DynamicSupervisor`s, `peers/beam/`), run by `elixir` as a child that
//! prints the same JSON lines; it is skipped with a note when `elixir` is not
//! installed. `--scale` runs the scale tier instead (module `scale`: the
//! figures at 100k, 1M and 10M ids, and the floors at each size; `--sizes`
//! picks some of those sizes, or others).
//!
//! `gen_registry` runs its workers on Bastion's executor (the default);
//! `gen_registry_tokio` runs them as tokio tasks (`Executor::Tokio`) on the
//! same kind of runtime ractor and kameo run on. The figures of a run are
//! checked against the targets of [`TARGETS`], printed under the table.

pub mod allocators;
mod bastion_rt;
mod beam;
pub mod charts;
mod common;
mod drivers;
#[doc = include_str!("eviction.md")]
#[path = "../../src/primitives/evict/mod.rs"]
pub mod eviction;
pub mod eviction_study;
pub mod lifecycle;
mod record;
mod scale;
mod sys_bastion_groups;
mod sys_floors;
mod sys_gen_registry;
mod sys_kameo;
mod sys_ractor;
mod tokio_rt;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every system, in column order.
pub const SYSTEMS: &[&str] = &[
    "gen_registry",
    "gen_registry_tokio",
    "ractor",
    "kameo",
    "bastion_group_per_id",
    "floor_rwlock_fxhashmap",
    "floor_bastion_proc",
    beam::SYSTEM,
];

/// The peers "best peer" is taken from.
const PEERS: &[&str] = &["ractor", "kameo", "bastion_group_per_id"];

/// The peers on tokio, which `gen_registry_tokio` is compared with.
const TOKIO_PEERS: &[&str] = &["ractor", "kameo"];

/// The BEAM peer alone, for the ratio column and the scale targets.
const BEAM: &[&str] = &[beam::SYSTEM];

/// The bare-proc floor alone, for the scale targets.
const PROC_FLOOR: &[&str] = &["floor_bastion_proc"];

/// The ratio columns: a system's figure ÷ the best of some peers (a column
/// only when its system ran).
const RATIOS: &[(&str, &[&str], &str)] = &[
    ("gen_registry", PEERS, "gen_registry / best peer"),
    ("gen_registry", BEAM, "gen_registry / elixir_registry"),
    (
        "gen_registry_tokio",
        TOKIO_PEERS,
        "gen_registry_tokio / best of ractor, kameo",
    ),
];

const CHILD_ENV: &str = "GEN_REGISTRY_PEERS_CHILD";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A size, printed, never compared.
    Info,
    Higher,
    Lower,
    /// A growth that is noise when healthy: printed, not compared.
    Leak,
    /// A correctness count with a required value: printed, not compared.
    Check,
}

struct Metric {
    id: &'static str,
    label: &'static str,
    unit: &'static str,
    kind: Kind,
}

const fn m(id: &'static str, label: &'static str, unit: &'static str, kind: Kind) -> Metric {
    Metric {
        id,
        label,
        unit,
        kind,
    }
}

const METRICS: &[Metric] = &[
    m("N", "N (ids in W1–W8, W10)", "ids", Kind::Info),
    m("W1", "W1 start ↑", "starts/s", Kind::Higher),
    m("W2", "W2 memory per idle worker ↓", "B/worker", Kind::Lower),
    m("W3", "W3 lookup hit, 1 thread ↓", "ns/op", Kind::Lower),
    m("W4", "W4 lookups, 2 threads ↑", "Mops/s", Kind::Higher),
    m("W4x", "W4 2 threads ÷ 1 thread ↑", "x", Kind::Higher),
    m("W5", "W5 lookup_or_start hit ↓", "ns/op", Kind::Lower),
    m("W6p50", "W6 call round trip p50 ↓", "µs", Kind::Lower),
    m("W6p99", "W6 call round trip p99 ↓", "µs", Kind::Lower),
    m(
        "W6tp50",
        "W6t call from a tokio task p50 ↓",
        "µs",
        Kind::Lower,
    ),
    m(
        "W6tp99",
        "W6t call from a tokio task p99 ↓",
        "µs",
        Kind::Lower,
    ),
    m("W7", "W7 lookup + call, spread ↓", "µs/op", Kind::Lower),
    m("W8", "W8 stop all ↑", "stops/s", Kind::Higher),
    m(
        "W8left",
        "W8 entries left (must be 0)",
        "entries",
        Kind::Check,
    ),
    m("W9", "W9 churn ↑", "cycles/s", Kind::Higher),
    m("W9cycles", "W9 cycles run", "cycles", Kind::Info),
    m("W9rss", "W9 RSS growth, 10 % → end", "KiB", Kind::Leak),
    m("W9leak", "W9 RSS growth per cycle", "B/cycle", Kind::Leak),
    m("W10count", "W10 count ↓", "ns", Kind::Lower),
    m("W10reduce", "W10 reduce over N ↓", "ms", Kind::Lower),
    m("W10list", "W10 to_list over N ↓", "ms", Kind::Lower),
    m(
        "W11",
        "W11 inits in a 64-way race (must be 1)",
        "inits",
        Kind::Check,
    ),
    m(
        "errors",
        "W9 failed calls/stops (must be 0)",
        "errors",
        Kind::Check,
    ),
];

/// A target a run's figures are checked against (medians of the same run).
pub enum Target {
    /// `system`'s `metric` at least `factor` × the best of `peers`'.
    TimesBest {
        system: &'static str,
        metric: &'static str,
        factor: f64,
        peers: &'static [&'static str],
    },
    /// `system`'s `metric` at most `limit` (in the metric's unit).
    AtMost {
        system: &'static str,
        metric: &'static str,
        limit: f64,
    },
    /// `system`'s `metric` no worse than `peer`'s.
    NoWorseThan {
        system: &'static str,
        metric: &'static str,
        peer: &'static str,
    },
}

/// The targets of gen_registry on tokio: starts and stops 3× the better
/// tokio peer, a small idle worker, and a call from a tokio task as cheap as
/// ractor's; and the scale targets at the standard N: starts and
/// stops near the bare-proc floor, a worker of at most 400 B, and 10× the
/// BEAM's Registry with DynamicSupervisor on W1, W8 and W9 in a third of its
/// memory. (The scale targets at 1M and 10M ids are checked by the scale
/// tier, `scale::check_targets`.)
pub const TARGETS: &[Target] = &[
    Target::TimesBest {
        system: "gen_registry",
        metric: "W1",
        factor: 0.7,
        peers: PROC_FLOOR,
    },
    Target::TimesBest {
        system: "gen_registry",
        metric: "W8",
        factor: 0.8,
        peers: PROC_FLOOR,
    },
    Target::AtMost {
        system: "gen_registry",
        metric: "W2",
        limit: 400.0,
    },
    Target::TimesBest {
        system: "gen_registry",
        metric: "W1",
        factor: 10.0,
        peers: BEAM,
    },
    Target::TimesBest {
        system: "gen_registry",
        metric: "W8",
        factor: 10.0,
        peers: BEAM,
    },
    Target::TimesBest {
        system: "gen_registry",
        metric: "W9",
        factor: 10.0,
        peers: BEAM,
    },
    Target::TimesBest {
        system: "gen_registry",
        metric: "W2",
        factor: 3.0,
        peers: BEAM,
    },
    Target::TimesBest {
        system: "gen_registry_tokio",
        metric: "W1",
        factor: 3.0,
        peers: TOKIO_PEERS,
    },
    Target::TimesBest {
        system: "gen_registry_tokio",
        metric: "W8",
        factor: 3.0,
        peers: TOKIO_PEERS,
    },
    Target::AtMost {
        system: "gen_registry_tokio",
        metric: "W2",
        limit: 700.0,
    },
    Target::AtMost {
        system: "gen_registry_tokio",
        metric: "W6tp50",
        limit: 1.0,
    },
    Target::NoWorseThan {
        system: "gen_registry_tokio",
        metric: "W6tp50",
        peer: "ractor",
    },
];

fn metric(id: &str) -> &'static Metric {
    METRICS
        .iter()
        .find(|m| m.id == id)
        .expect("a target names a known metric")
}

/// Whether `a` is at least as good as `b` on `met`.
fn as_good(met: &Metric, a: f64, b: f64) -> bool {
    match met.kind {
        Kind::Higher => a >= b,
        _ => a <= b,
    }
}

impl Target {
    /// The system the target is about.
    fn system(&self) -> &'static str {
        let (Target::TimesBest { system, .. }
        | Target::AtMost { system, .. }
        | Target::NoWorseThan { system, .. }) = *self;
        system
    }

    /// What the target asks, the figures it was checked on, and whether it
    /// was met (`None`: a figure is missing from this run).
    fn check(&self, r: &Results) -> (String, String, Option<bool>) {
        let missing = |what: String| (what, "not measured in this run".to_owned(), None);
        match *self {
            Target::TimesBest {
                system,
                metric: id,
                factor,
                peers,
            } => {
                let met = metric(id);
                let what = match met.kind {
                    Kind::Higher => {
                        format!(
                            "{id} of {system} ≥ {factor}× the best of {}",
                            peers.join(", ")
                        )
                    }
                    _ => format!(
                        "{id} of {system} ≤ 1/{factor} of the best of {}",
                        peers.join(", ")
                    ),
                };
                let (Some(ours), Some((peer, best))) =
                    (r.median(system, id), best_of(r, peers, met))
                else {
                    return missing(what);
                };
                let figure = format!(
                    "{} {unit} = {:.2}× {peer}'s {} {unit}",
                    fmt_value(ours),
                    ours / best,
                    fmt_value(best),
                    unit = met.unit
                );
                let ok = match met.kind {
                    Kind::Higher => ours >= factor * best,
                    _ => ours * factor <= best,
                };
                (what, figure, Some(ok))
            }
            Target::AtMost {
                system,
                metric: id,
                limit,
            } => {
                let met = metric(id);
                let what = format!("{id} of {system} ≤ {} {}", fmt_value(limit), met.unit);
                let Some(ours) = r.median(system, id) else {
                    return missing(what);
                };
                let figure = format!("{} {}", fmt_value(ours), met.unit);
                (what, figure, Some(ours <= limit))
            }
            Target::NoWorseThan {
                system,
                metric: id,
                peer,
            } => {
                let met = metric(id);
                let what = format!("{id} of {system} no worse than {peer}'s");
                let (Some(ours), Some(theirs)) = (r.median(system, id), r.median(peer, id)) else {
                    return missing(what);
                };
                let figure = format!(
                    "{} {unit} against {} {unit} ({:.2}×)",
                    fmt_value(ours),
                    fmt_value(theirs),
                    ours / theirs,
                    unit = met.unit
                );
                (what, figure, Some(as_good(met, ours, theirs)))
            }
        }
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "—",
    }
}

/// The targets checked on this run: one row each (target, figure, verdict),
/// for the targets whose system ran.
fn check_targets(systems: &[&str], r: &Results) -> Vec<[String; 3]> {
    TARGETS
        .iter()
        .filter(|t| systems.contains(&t.system()))
        .map(|t| {
            let (what, figure, ok) = t.check(r);
            [what, figure, verdict(ok).to_owned()]
        })
        .collect()
}

/// Formats a figure with about three significant digits (thousands
/// separated).
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let mut digits = format!("{:.0}", a);
        let mut out = String::new();
        while digits.len() > 3 {
            let tail = digits.split_off(digits.len() - 3);
            out = format!(",{tail}{out}");
        }
        format!("{}{digits}{out}", if v < 0.0 { "-" } else { "" })
    } else if a >= 100.0 || a == 0.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

struct Args {
    quick: bool,
    /// `--scale`: the scale tier (module `scale`).
    scale: bool,
    /// `--n N`: the size a scale child runs at.
    n: Option<usize>,
    /// `--sizes N,N…`: the sizes a scale run runs at (default: all of
    /// [`scale::SIZES`]).
    sizes: Vec<usize>,
    json: Option<String>,
    /// `--charts DIR`: draw the chart of the `--json` file into DIR.
    charts: Option<String>,
    markdown: Option<String>,
    systems: Vec<String>,
    runs: Option<usize>,
}

fn parse_args() -> Args {
    let mut a = Args {
        quick: false,
        scale: false,
        n: None,
        sizes: Vec::new(),
        json: None,
        charts: None,
        markdown: None,
        systems: Vec::new(),
        runs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--scale" => a.scale = true,
            "--n" => {
                a.n = Some(
                    it.next()
                        .and_then(|s| s.parse().ok())
                        .expect("--n N (a number)"),
                )
            }
            "--sizes" => {
                let list = it.next().unwrap_or_default();
                let sizes: Option<Vec<usize>> = list
                    .split(',')
                    .map(|n| n.trim().replace('_', "").parse().ok().filter(|n| *n > 0))
                    .collect();
                match sizes {
                    Some(sizes) => a.sizes = sizes,
                    None => {
                        eprintln!(
                            "--sizes takes sizes separated by commas, such as 100000,1000000; got {list:?}"
                        );
                        std::process::exit(2);
                    }
                }
            }
            "--json" => a.json = Some(it.next().expect("--json FILE")),
            "--charts" => a.charts = Some(it.next().expect("--charts DIR")),
            "--markdown" => a.markdown = Some(it.next().expect("--markdown FILE")),
            "--system" => a.systems.extend(
                it.next()
                    .expect("--system NAME")
                    .split(',')
                    .map(str::to_owned),
            ),
            "--runs" => {
                a.runs = Some(
                    it.next()
                        .and_then(|s| s.parse().ok())
                        .expect("--runs K (a number)"),
                )
            }
            // `cargo bench` passes `--bench` to a harness-less bench.
            "--bench" => {}
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: [--quick] [--scale [--sizes N,N]] [--json FILE [--charts DIR]] [--markdown FILE] [--system NAME[,NAME]] [--runs K]"
                );
                std::process::exit(2);
            }
        }
    }
    if a.charts.is_some() && a.json.is_none() {
        eprintln!("--charts DIR draws the chart from the --json file: give --json FILE too");
        std::process::exit(2);
    }
    if !a.sizes.is_empty() && !a.scale {
        eprintln!("--sizes is an option of the scale tier: give --scale too");
        std::process::exit(2);
    }
    let known: Vec<&str> = if a.scale {
        scale::SYSTEMS.iter().map(|(s, _)| *s).collect()
    } else {
        SYSTEMS.to_vec()
    };
    for s in &a.systems {
        if !known.contains(&s.as_str()) {
            eprintln!("unknown system {s:?}; systems: {}", known.join(", "));
            std::process::exit(2);
        }
    }
    a
}

/// Entry point of the `peers` bench.
pub fn main() {
    let args = parse_args();
    if std::env::var_os(CHILD_ENV).is_some() {
        let [system] = args.systems.as_slice() else {
            panic!("a child runs exactly one --system");
        };
        if args.scale {
            let system = scale::SYSTEMS
                .iter()
                .map(|(s, _)| *s)
                .find(|s| s == system)
                .expect("a system of the scale tier");
            scale::run_child(system, args.n.expect("a scale child is given --n"));
        } else {
            run_child(system, args.quick);
        }
        // Runtimes and Bastion's threads are never torn down: leave now.
        std::process::exit(0);
    }
    if args.scale {
        run_parent_scale(&args);
    } else {
        run_parent(&args);
    }
}

fn run_child(system: &str, quick: bool) {
    let cfg = common::Config::new(quick);
    let out = common::Out::new(
        SYSTEMS
            .iter()
            .find(|s| **s == system)
            .expect("known system"),
    );
    match system {
        "gen_registry" => sys_gen_registry::run(&cfg, &out),
        "gen_registry_tokio" => sys_gen_registry::run_tokio(&cfg, &out),
        "ractor" => sys_ractor::run(&cfg, &out),
        "kameo" => sys_kameo::run(&cfg, &out),
        "bastion_group_per_id" => sys_bastion_groups::run(&cfg, &out),
        "floor_rwlock_fxhashmap" => sys_floors::run_rwlock(&cfg, &out),
        "floor_bastion_proc" => sys_floors::run_proc(&cfg, &out),
        // Run by `elixir`, never as a child of this binary.
        _ => unreachable!("{system} is not a Rust system"),
    }
}

/// What the children reported: values per (system, metric), in run order
/// (`None` = absent), and the notes.
#[derive(Default)]
struct Results {
    values: BTreeMap<(String, String), Vec<Option<f64>>>,
    notes: Vec<String>,
}

impl Results {
    fn median(&self, system: &str, metric: &str) -> Option<f64> {
        let v = self.values.get(&(system.to_owned(), metric.to_owned()))?;
        let mut xs: Vec<f64> = v.iter().flatten().copied().collect();
        if xs.is_empty() {
            None
        } else {
            Some(common::median(&mut xs))
        }
    }

    fn reported(&self, system: &str, metric: &str) -> bool {
        self.values
            .contains_key(&(system.to_owned(), metric.to_owned()))
    }

    fn note(&mut self, s: String) {
        if !self.notes.contains(&s) {
            self.notes.push(s);
        }
    }
}

fn run_parent(args: &Args) {
    let systems: Vec<&str> = if args.systems.is_empty() {
        SYSTEMS.to_vec()
    } else {
        SYSTEMS
            .iter()
            .copied()
            .filter(|s| args.systems.iter().any(|a| a == s))
            .collect()
    };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 5 });
    let exe = std::env::current_exe().expect("current_exe");
    let cfg = common::Config::new(args.quick);
    let limit = Duration::from_secs(if args.quick { 100 } else { 900 });
    eprintln!(
        "peers benchmark: {} mode, N = {}, M = {}, churn = {} cycles, {} run(s) per system, each in a fresh child process",
        if args.quick { "quick" } else { "full" },
        cfg.n,
        cfg.m,
        cfg.churn,
        runs
    );
    let started = Instant::now();
    let mut info = record::RunInfo::start("standard", args.quick, runs);
    let mut results = Results::default();
    for system in &systems {
        if *system == beam::SYSTEM && !beam::available() {
            eprintln!("!! {system}: skipped: no `elixir` on the PATH");
            results.note(skipped_beam());
            continue;
        }
        for run in 1..=runs {
            info.sample_load();
            eprintln!("== {system} (run {run}/{runs})");
            let cmd = if *system == beam::SYSTEM {
                beam::command(cfg.n, cfg.m, cfg.churn, cfg.pool, None)
            } else {
                let mut cmd = child_command(&exe, system);
                if args.quick {
                    cmd.arg("--quick");
                }
                cmd
            };
            if let Err(e) = run_one(cmd, system, limit, &mut results) {
                eprintln!("!! {system} run {run}: {e}");
                results.note(format!("{system}: run {run} failed: {e}"));
            }
        }
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());

    let header = format!(
        "{} run: N = {}, M = {}, W9 = {} cycles on a pool of {} ids; {}; {} core(s); {}.",
        if args.quick { "Quick" } else { "Full" },
        fmt_value(cfg.n as f64),
        fmt_value(cfg.m as f64),
        fmt_value(cfg.churn as f64),
        fmt_value(cfg.pool as f64),
        if runs == 1 {
            "one run per system".to_owned()
        } else {
            format!("median of {runs} runs per system, each a fresh child process")
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        info.load_summary(),
    );
    let table = build_table(&systems, &results);
    let targets = check_targets(&systems, &results);
    println!("{header}\n");
    print!("{}", render_plain(&table));
    println!();
    for n in legend(&results) {
        println!("{n}");
    }
    if !targets.is_empty() {
        println!("\nTargets, checked on the medians of this run:");
        for [what, figure, ok] in &targets {
            println!("- {what}: {figure}: {}", ok.trim_matches('*'));
        }
    }
    if let Some(path) = &args.json {
        write_json(path, info.finish(json_rows(&systems, &results)));
        draw_chart(path, args.charts.as_deref());
    }
    if let Some(path) = &args.markdown {
        let mut md = format!("{header}\n\n{}\n", render_markdown(&table));
        for n in legend(&results) {
            md.push_str(&format!("- {}\n", n.trim_start_matches("- ")));
        }
        md.push_str(&targets_markdown(&targets));
        std::fs::write(path, md).expect("write --markdown file");
    }
}

/// The note of a run without the BEAM peer.
fn skipped_beam() -> String {
    format!(
        "{}: skipped: no `elixir` on the PATH (peers/bench.sh installs Debian's `elixir` package with apt-get)",
        beam::SYSTEM
    )
}

/// This binary, re-run as the child that measures `system`.
fn child_command(exe: &std::path::Path, system: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("--system").arg(system).env(CHILD_ENV, "1");
    cmd
}

/// Runs one child (`cmd`, measuring `system`), killed after `limit`, and
/// files the JSON lines it printed under `system`.
fn run_one(
    mut cmd: Command,
    system: &str,
    limit: Duration,
    results: &mut Results,
) -> Result<(), String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines = reader.join().map_err(|_| "reader panicked".to_owned())?;
    for line in lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(note) = v.get("note").and_then(|n| n.as_str()) {
            results.note(format!("{system}: {note}"));
            continue;
        }
        let (Some(metric), Some(value)) =
            (v.get("metric").and_then(|m| m.as_str()), v.get("value"))
        else {
            continue;
        };
        results
            .values
            .entry((system.to_owned(), metric.to_owned()))
            .or_default()
            .push(value.as_f64());
    }
    match status {
        None => Err(format!("killed after {} s", limit.as_secs())),
        Some(st) if !st.success() => Err(format!("exited with {st}")),
        Some(_) => Ok(()),
    }
}

/// The scale tier: every system of [`scale::SYSTEMS`] (or of `--system`) at
/// each size it runs at, one child process each, one table per size, the
/// scale targets under them.
fn run_parent_scale(args: &Args) {
    let exe = std::env::current_exe().expect("current_exe");
    let sizes = if args.sizes.is_empty() {
        scale::sizes(args.quick)
    } else {
        &args.sizes[..]
    };
    eprintln!(
        "peers benchmark, scale tier: N = {}; each system in a fresh child process per N, once",
        sizes
            .iter()
            .map(|n| fmt_value(*n as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();
    let mut info = record::RunInfo::start("scale", args.quick, 1);
    let beam_ok = beam::available();
    let mut by_n: Vec<(usize, Results)> = Vec::new();
    for &n in sizes {
        let mut results = Results::default();
        let systems = scale::systems_at(n, &args.systems);
        for system in &systems {
            info.sample_load();
            let limit = scale::limit_for(n);
            eprintln!(
                "== {system} at N = {} (limit {} s; {:.0} s into the run)",
                fmt_value(n as f64),
                limit.as_secs(),
                started.elapsed().as_secs_f64()
            );
            let cmd = if *system == beam::SYSTEM {
                if !beam_ok {
                    eprintln!("!! {system}: skipped: no `elixir` on the PATH");
                    results.note(skipped_beam());
                    continue;
                }
                beam::command(n, 100_000, 0, 0, Some(scale::phase_cap(n)))
            } else {
                let mut cmd = child_command(&exe, system);
                cmd.arg("--scale").arg("--n").arg(n.to_string());
                cmd
            };
            if let Err(e) = run_one(cmd, system, limit, &mut results) {
                eprintln!("!! {system} at N = {n}: {e}");
                results.note(format!("{system}: {e} (timed out at N = {n})"));
            }
        }
        by_n.push((n, results));
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());

    let mut md = format!(
        "Scale tier: one run per system and N, each a fresh child process; {} core(s); {}.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        info.load_summary()
    );
    for (n, r) in &by_n {
        let systems = scale::systems_at(*n, &args.systems);
        let table = metric_table(scale::METRICS, &systems, r, &[]);
        println!("\nN = {}\n", fmt_value(*n as f64));
        print!("{}", render_plain(&table));
        md.push_str(&format!(
            "\n### N = {}\n\n{}",
            fmt_value(*n as f64),
            render_markdown(&table)
        ));
        for note in &r.notes {
            println!("- {note}");
            md.push_str(&format!("- {note}\n"));
        }
    }
    let targets = scale::check_targets(&by_n);
    if !targets.is_empty() {
        println!("\nScale targets, checked on this run:");
        for [what, figure, ok] in &targets {
            println!("- {what}: {figure}: {}", ok.trim_matches('*'));
        }
    }
    md.push_str(&targets_markdown(&targets));
    if let Some(path) = &args.json {
        let mut arr = Vec::new();
        for (n, r) in &by_n {
            for ((system, metric), values) in &r.values {
                let unit = scale::METRICS
                    .iter()
                    .find(|m| m.id == metric)
                    .map_or("", |m| m.unit);
                arr.push(serde_json::json!({
                    "system": system, "n": n, "metric": metric,
                    "value": values.iter().flatten().next(), "unit": unit,
                }));
            }
        }
        write_json(path, info.finish(arr));
        draw_chart(path, args.charts.as_deref());
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, md).expect("write --markdown file");
    }
}

/// The checked targets as a markdown table after a blank line (nothing
/// when there are none).
fn targets_markdown(targets: &[[String; 3]]) -> String {
    if targets.is_empty() {
        return String::new();
    }
    let mut rows = vec![vec![
        "target".to_owned(),
        "figure (this run)".to_owned(),
        "met?".to_owned(),
    ]];
    rows.extend(targets.iter().map(|t| t.to_vec()));
    format!("\n{}", render_markdown_left(&rows))
}

/// Rows of strings: header first.
fn build_table(systems: &[&str], r: &Results) -> Vec<Vec<String>> {
    let ratios: Vec<_> = RATIOS
        .iter()
        .filter(|(ours, _, _)| systems.contains(ours))
        .collect();
    metric_table(METRICS, systems, r, &ratios)
}

/// The rows of `metrics` some system reported, a column per system and one
/// per ratio.
fn metric_table(
    metrics: &[Metric],
    systems: &[&str],
    r: &Results,
    ratios: &[&(&str, &[&str], &str)],
) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut head = vec!["metric".to_owned(), "unit".to_owned()];
    head.extend(systems.iter().map(|s| (*s).to_owned()));
    head.extend(ratios.iter().map(|(_, _, title)| (*title).to_owned()));
    rows.push(head);
    for met in metrics {
        // Skip rows no system reported at all.
        if !systems.iter().any(|s| r.reported(s, met.id)) {
            continue;
        }
        let mut row = vec![met.label.to_owned(), met.unit.to_owned()];
        for s in systems {
            row.push(match r.median(s, met.id) {
                Some(v) => fmt_value(v),
                None => "—".to_owned(),
            });
        }
        for (ours, peers, _) in ratios {
            let x = ratio(r, ours, peers, met);
            row.push(x.map_or("—".to_owned(), |x| format!("{x:.2}")));
        }
        rows.push(row);
    }
    rows
}

/// `ours`'s value ÷ the best of `peers`' (the highest for ↑ metrics, the
/// lowest for ↓ ones): > 1 is better for ↑, < 1 is better for ↓.
fn ratio(r: &Results, ours: &str, peers: &[&str], met: &Metric) -> Option<f64> {
    let ours = r.median(ours, met.id)?;
    let (_, best) = best_of(r, peers, met)?;
    Some(ours / best)
}

/// The best of `peers` on `met` and its figure; `None` for a metric that is
/// not compared, or when no peer has a figure.
fn best_of<'a>(r: &Results, peers: &[&'a str], met: &Metric) -> Option<(&'a str, f64)> {
    let figures = peers
        .iter()
        .filter_map(|p| Some((*p, r.median(p, met.id)?)))
        .filter(|(_, v)| v.is_finite() && *v > 0.0);
    match met.kind {
        Kind::Higher => figures.max_by(|a, b| a.1.total_cmp(&b.1)),
        Kind::Lower => figures.min_by(|a, b| a.1.total_cmp(&b.1)),
        _ => None,
    }
}

fn render_plain(rows: &[Vec<String>]) -> String {
    let cols = rows[0].len();
    let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(width).collect();
    let mut s = String::new();
    for (i, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c < 2 {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
            s.push_str(if c + 1 == cols { "\n" } else { "  " });
        }
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (cols - 1);
            s.push_str(&"-".repeat(total));
            s.push('\n');
        }
    }
    s
}

fn render_markdown(rows: &[Vec<String>]) -> String {
    render_markdown_aligned(rows, 2)
}

/// A markdown table with every column left-aligned.
fn render_markdown_left(rows: &[Vec<String>]) -> String {
    render_markdown_aligned(rows, usize::MAX)
}

/// A markdown table whose first `left` columns are left-aligned and the
/// others right-aligned.
fn render_markdown_aligned(rows: &[Vec<String>], left: usize) -> String {
    let mut s = String::new();
    for (i, row) in rows.iter().enumerate() {
        s.push_str("| ");
        s.push_str(&row.join(" | "));
        s.push_str(" |\n");
        if i == 0 {
            s.push('|');
            for c in 0..row.len() {
                s.push_str(if c < left { "---|" } else { "---:|" });
            }
            s.push('\n');
        }
    }
    s
}

fn legend(r: &Results) -> Vec<String> {
    let mut v = vec![
        "- ↑ higher is better, ↓ lower is better; \"gen_registry / best peer\" divides gen_registry's figure by the best of ractor, kameo and bastion_group_per_id, \"gen_registry / elixir_registry\" gen_registry's by the BEAM peer's (Elixir's Registry with DynamicSupervisors, peers/beam/), \"gen_registry_tokio / best of ractor, kameo\" gen_registry_tokio's by the best of those two (> 1 wins for ↑, < 1 wins for ↓); \"—\" = the system has no such operation (or no such figure).".to_owned(),
        "- ractor, kameo and gen_registry_tokio (gen_registry with `Executor::Tokio`: workers are tokio tasks) run on a tokio multi-thread runtime with 2 workers; gen_registry, bastion_group_per_id and floor_bastion_proc on Bastion's executor. W5, W6, W7 and W9 run inside the runtime (a tokio task / a Bastion proc). W6t calls from a tokio task on a 2-worker runtime: for the systems on tokio it is their W6; for gen_registry the runtime is a second one, beside Bastion's executor, so each call wakes a proc on Bastion's executor from a tokio thread and the reply wakes the tokio task from a Bastion thread. W1 and W8 run 2 drivers (tasks / procs) × join_all of 16 (the best of 1, 16 and 256 for ractor and kameo), except bastion_group_per_id's W1: its spawn is synchronous and serialized, so one plain thread spawns (its fastest way). W9 runs 2 drivers, each cycling on its own half of the pool.".to_owned(),
        "- W5 is absent for the peers: none has a lookup_or_start; W11 uses each peer's nearest equivalent (lookup, else spawn under the name; the name is claimed before init runs).".to_owned(),
    ];
    v.extend(r.notes.iter().map(|n| format!("- {n}")));
    v
}

/// The figures of a standard run, a JSON object per system and metric.
fn json_rows(systems: &[&str], r: &Results) -> Vec<serde_json::Value> {
    let mut arr = Vec::new();
    for s in systems {
        for met in METRICS {
            if !r.reported(s, met.id) {
                continue;
            }
            arr.push(serde_json::json!({
                "system": s,
                "metric": met.id,
                "value": r.median(s, met.id),
                "unit": met.unit,
            }));
        }
    }
    arr
}

/// Writes the `--json` file.
fn write_json(path: &str, doc: serde_json::Value) {
    let text = serde_json::to_string_pretty(&doc).expect("json");
    std::fs::write(path, text + "\n").expect("write --json file");
}

/// Draws the chart of the `--json` file at `json` into `dir`, if given; a
/// failure is reported, and leaves the figures in the JSON file.
fn draw_chart(json: &str, dir: Option<&str>) {
    let Some(dir) = dir else { return };
    match charts::write_chart(std::path::Path::new(json), std::path::Path::new(dir)) {
        Ok(path) => eprintln!("chart written to {}", path.display()),
        Err(e) => eprintln!("!! no chart of {json}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(figures: &[(&str, &str, f64)]) -> Results {
        let mut r = Results::default();
        for (system, metric, value) in figures {
            r.values
                .entry(((*system).to_owned(), (*metric).to_owned()))
                .or_default()
                .push(Some(*value));
        }
        r
    }

    const W1_3X: Target = Target::TimesBest {
        system: "gen_registry_tokio",
        metric: "W1",
        factor: 3.0,
        peers: TOKIO_PEERS,
    };

    #[test]
    fn times_best_is_met_at_the_factor_over_the_better_peer_and_missed_below() {
        // ractor's 100 is the better peer's figure.
        let w1 = |ours| {
            results(&[
                ("gen_registry_tokio", "W1", ours),
                ("ractor", "W1", 100.0),
                ("kameo", "W1", 50.0),
            ])
        };
        assert_eq!(W1_3X.check(&w1(300.0)).2, Some(true));
        let (_, figure, ok) = W1_3X.check(&w1(299.0));
        assert_eq!(ok, Some(false));
        assert!(figure.contains("ractor's"), "{figure}");
    }

    #[test]
    fn times_best_on_a_lower_is_better_metric_divides_the_other_way() {
        let target = Target::TimesBest {
            system: "gen_registry_tokio",
            metric: "W6tp50",
            factor: 2.0,
            peers: TOKIO_PEERS,
        };
        let p50 = |ours| {
            results(&[
                ("gen_registry_tokio", "W6tp50", ours),
                ("ractor", "W6tp50", 1.0),
            ])
        };
        assert_eq!(target.check(&p50(0.5)).2, Some(true));
        let (what, _, ok) = target.check(&p50(0.6));
        assert_eq!(ok, Some(false));
        assert!(what.contains("≤ 1/2 of"), "{what}");
    }

    #[test]
    fn at_most_is_met_at_the_limit_and_missed_above() {
        let target = Target::AtMost {
            system: "gen_registry_tokio",
            metric: "W2",
            limit: 700.0,
        };
        assert_eq!(
            target
                .check(&results(&[("gen_registry_tokio", "W2", 700.0)]))
                .2,
            Some(true)
        );
        assert_eq!(
            target
                .check(&results(&[("gen_registry_tokio", "W2", 701.0)]))
                .2,
            Some(false)
        );
    }

    #[test]
    fn no_worse_than_follows_the_direction_of_the_metric() {
        let p50 = Target::NoWorseThan {
            system: "gen_registry_tokio",
            metric: "W6tp50",
            peer: "ractor",
        };
        let faster = results(&[
            ("gen_registry_tokio", "W6tp50", 0.4),
            ("ractor", "W6tp50", 0.9),
        ]);
        let slower = results(&[
            ("gen_registry_tokio", "W6tp50", 1.0),
            ("ractor", "W6tp50", 0.9),
        ]);
        assert_eq!(p50.check(&faster).2, Some(true));
        assert_eq!(p50.check(&slower).2, Some(false));
    }

    #[test]
    fn a_target_without_its_figures_is_not_measured_rather_than_missed() {
        let r = results(&[("gen_registry_tokio", "W1", 300.0)]);
        let (_, figure, ok) = W1_3X.check(&r);
        assert_eq!(ok, None);
        assert_eq!(verdict(ok), "—");
        assert!(figure.contains("not measured"), "{figure}");
    }

    #[test]
    fn only_the_targets_of_systems_that_ran_are_listed() {
        let r = results(&[("ractor", "W1", 100.0)]);
        assert!(check_targets(&["ractor", "kameo"], &r).is_empty());
        assert_eq!(
            check_targets(&["gen_registry_tokio", "ractor"], &r).len(),
            TARGETS
                .iter()
                .filter(|t| t.system() == "gen_registry_tokio")
                .count()
        );
    }
}
