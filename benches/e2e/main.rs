//! End-to-end benchmarks: every scenario through raw rumqttc and through mqtt-sessions, in
//! one run, against one mosquitto on loopback that the bench starts itself.
//!
//! ```text
//! cargo bench --bench e2e                      # every scenario, 3 runs each, medians
//! cargo bench --bench e2e -- --quick           # smoke run: 1 short run each
//! cargo bench --bench e2e -- fan-in latency    # only scenarios whose name contains a word
//! cargo bench --bench e2e -- --runs 5 --results target/bench/e2e.json --svg docs/benchmarks.svg
//! cargo bench --bench e2e -- forward           # forwarding: mosquitto's bridge, a raw rumqttc forwarder, the daemon
//! ```
//!
//! The forwarding scenarios run the `mqtt-sessions` daemon binary of the same profile
//! (`cargo build -p mqtt-sessions-daemon [--release]` first; `scripts/bench` does).
//!
//! `scripts/bench` runs this and the matching micro-benchmarks with the right open-file
//! limit and writes `target/bench/results.json` and `docs/benchmarks.svg`;
//! `docs/BENCHMARKS.md` explains the method and holds the figures.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark's output is its printed table"
)]

mod broker;
mod common;
mod forward;
mod library;
mod neighbour;
mod provenance;
#[path = "../../tests/common/proxy.rs"]
mod proxy;
mod raw;
mod raw_forwarder;
mod report;
mod sample;
mod scenarios;

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use report::ScenarioResult;
use scenarios::{Config, Kind};

/// The subscribing side of a run, on its own thread: tells when it is subscribed, stops
/// when told.
#[derive(Debug)]
pub(crate) struct SubscriberThread {
    ready: mpsc::Receiver<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl SubscriberThread {
    /// Runs `f(ready, stop)` on a new thread.
    pub(crate) fn spawn<F>(f: F) -> Self
    where
        F: FnOnce(mpsc::Sender<()>, tokio::sync::oneshot::Receiver<()>) + Send + 'static,
    {
        let (ready_tx, ready) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let join = std::thread::spawn(move || f(ready_tx, stop_rx));
        SubscriberThread {
            ready,
            stop: Some(stop),
            join: Some(join),
        }
    }

    /// Waits until the subscription is in place.
    pub(crate) fn wait_ready(&self, timeout: Duration) -> bool {
        self.ready.recv_timeout(timeout).is_ok()
    }

    /// Stops the subscriber and joins its thread.
    pub(crate) fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Where and how the bench ran.
#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    cpu: String,
    mem_total_kb: u64,
    kernel: String,
    mosquitto: String,
    open_files_limit: u64,
}

impl Machine {
    fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .unwrap_or("")
                .trim()
                .to_string(),
            mem_total_kb: meminfo
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            mosquitto: broker::version(),
            open_files_limit: common::open_files_limit(),
        }
    }
}

/// Everything `--results` writes.
#[derive(Debug, Serialize)]
struct Results {
    /// Commit, dirty flag and start time, read before the first measurement.
    #[serde(flatten)]
    provenance: provenance::Provenance,
    /// When the results were written, UTC.
    ended: String,
    machine: Machine,
    runs_per_scenario: usize,
    quick: bool,
    load_before: [f64; 3],
    load_after: [f64; 3],
    scenarios: Vec<ScenarioResult>,
    matching: Vec<MatchingResult>,
}

/// A criterion benchmark's median, read from `target/criterion/**/new/estimates.json`.
#[derive(Debug, Serialize)]
struct MatchingResult {
    id: String,
    median_ns: f64,
}

fn criterion_medians(dir: &std::path::Path) -> Vec<MatchingResult> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "report" && n != "base") {
                stack.push(p);
            } else if p.ends_with("new/estimates.json") {
                let json: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_default())
                        .unwrap_or_default();
                let bench = p
                    .parent()
                    .and_then(|n| n.parent())
                    .and_then(|b| b.strip_prefix(dir).ok())
                    .map(|b| b.display().to_string())
                    .unwrap_or_default();
                if let Some(ns) = json["median"]["point_estimate"].as_f64() {
                    out.push(MatchingResult {
                        id: bench,
                        median_ns: ns,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

struct Args {
    quick: bool,
    runs: Option<usize>,
    sessions: Option<usize>,
    results: Option<PathBuf>,
    svg: Option<PathBuf>,
    criterion: Option<PathBuf>,
    list: bool,
    filters: Vec<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        quick: false,
        runs: None,
        sessions: None,
        results: None,
        svg: None,
        criterion: None,
        list: false,
        filters: Vec::new(),
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--list" => a.list = true,
            "--runs" => a.runs = Some(value("--runs").parse().expect("--runs N")),
            "--sessions" => a.sessions = Some(value("--sessions").parse().expect("--sessions N")),
            "--results" => a.results = Some(value("--results").into()),
            "--svg" => a.svg = Some(value("--svg").into()),
            "--criterion" => a.criterion = Some(value("--criterion").into()),
            // Passed by `cargo bench`.
            "--bench" => {}
            other if other.starts_with("--") => panic!("unknown option {other}"),
            other => a.filters.push(other.to_string()),
        }
    }
    a
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = argv.iter().position(|a| a == "--child-sessions") {
        scenarios::child_sessions(&argv[i + 1..]);
        return;
    }
    if let Some(i) = argv.iter().position(|a| a == "--child-forwarder") {
        raw_forwarder::child_forwarder(&argv[i + 1..]);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it. A test run only checks that the scenario list builds: the measurements take
    // minutes and mean nothing in a debug build.
    if !argv.iter().any(|a| a == "--bench") {
        let n = scenarios::all(&Config::new(true)).len();
        println!(
            "e2e: {n} scenarios; measure with `cargo bench --bench e2e` (see docs/BENCHMARKS.md)"
        );
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let args = parse_args(argv.into_iter());
    let mut cfg = Config::new(args.quick);
    if let Some(r) = args.runs {
        cfg.runs = r.max(1);
    }
    if let Some(n) = args.sessions {
        cfg.sessions = n;
    }
    let scenarios: Vec<_> = scenarios::all(&cfg)
        .into_iter()
        .filter(|s| args.filters.is_empty() || args.filters.iter().any(|f| s.name.contains(f)))
        .collect();
    if args.list {
        for s in &scenarios {
            println!("{}", s.name);
        }
        return;
    }
    // Read before anything is measured: where these results come from.
    let provenance = provenance::read();
    if provenance.dirty {
        eprintln!(
            "e2e: warning: uncommitted changes ({}); scripts/figures --check refuses such results",
            provenance.dirty_paths.join(", ")
        );
    }
    if scenarios
        .iter()
        .any(|s| matches!(s.kind, Kind::Forward { .. }))
    {
        match forward::daemon_binary() {
            Ok(bin) => {
                eprintln!("e2e: forwarding through {}", bin.display());
                cfg.daemon = Some(bin);
            }
            Err(e) => {
                eprintln!("e2e: {e}");
                std::process::exit(1);
            }
        }
    }
    let machine = Machine::probe();
    let load_before = common::loadavg();
    eprintln!(
        "e2e: {} scenario(s), {} run(s) each; {} x {}; load average {:.2} {:.2} {:.2}",
        scenarios.len(),
        cfg.runs,
        machine.nproc,
        machine.cpu,
        load_before[0],
        load_before[1],
        load_before[2]
    );
    let broker = broker::Broker::start();
    eprintln!("e2e: {} on {}", machine.mosquitto, broker.url());
    let mut results = Vec::new();
    for sc in &scenarios {
        let runs = if matches!(sc.kind, Kind::Pending(_)) {
            1
        } else {
            cfg.runs
        };
        let mut samples: Vec<(sample::Variant, Vec<sample::Sample>)> =
            sc.variants.iter().map(|v| (*v, Vec::new())).collect();
        // Variants alternate within each run, so a change of machine load hits them alike.
        for run in 0..runs {
            for (variant, out) in &mut samples {
                let s = scenarios::run(sc, *variant, &broker, &cfg);
                eprintln!(
                    "e2e: {} / {} run {}/{}: {}",
                    sc.name,
                    variant.as_str(),
                    run + 1,
                    runs,
                    serde_json::to_string(&s).unwrap_or_default()
                );
                out.push(s);
            }
        }
        results.push(ScenarioResult::new(sc, samples));
    }
    let load_after = common::loadavg();
    let broker_log = broker.log();
    drop(broker);
    println!(
        "\nload average before {:.2} {:.2} {:.2}, after {:.2} {:.2} {:.2}; {} run(s) per variant, medians\n",
        load_before[0],
        load_before[1],
        load_before[2],
        load_after[0],
        load_after[1],
        load_after[2],
        cfg.runs
    );
    println!("{}", report::table(&results));
    if !broker_log.trim().is_empty() {
        eprintln!(
            "e2e: mosquitto warnings/errors (last lines):\n{}",
            broker_log
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if let Some(path) = &args.svg {
        let subtitle = format!(
            "{} x {}, {}; medians of {} runs; load average {:.2} before, {:.2} after",
            machine.nproc, machine.cpu, machine.mosquitto, cfg.runs, load_before[0], load_after[0]
        );
        let svg = report::svg(&results, &scenarios, &subtitle);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the chart's directory");
        }
        std::fs::write(path, svg).expect("write the chart");
        eprintln!("e2e: chart written to {}", path.display());
    }
    if let Some(path) = &args.results {
        let matching = args
            .criterion
            .as_deref()
            .map(criterion_medians)
            .unwrap_or_default();
        report::write_json(
            path,
            &Results {
                provenance,
                ended: provenance::utc_now(),
                machine,
                runs_per_scenario: cfg.runs,
                quick: args.quick,
                load_before,
                load_after,
                scenarios: results,
                matching,
            },
        );
        eprintln!("e2e: results written to {}", path.display());
    }
}
