//! Replays the committed fuzz corpora (`tests/fuzz/corpus/<target>/`) through the same logic the
//! cargo-fuzz targets run (`tests/common/fuzz/`, included here with `#[path]`), so every
//! input the fuzzers kept is checked under plain `cargo test` on a stable toolchain, without
//! libFuzzer. See docs/RELIABILITY.md for how the corpora were grown.
//!
//! - `open_dir`: a damaged copy of a valid WAL directory is opened in both recovery modes and
//!   read in full; nothing may panic, and nothing read may be altered data.
//! - `ops_model`: an operation sequence runs on `DiskStorage` and on a reference model; they
//!   must agree after every operation.
//! - `open_engine`: a damaged image of a valid engine root (phase B in its journal only) is
//!   opened in both recovery modes and every group read in full; nothing may panic, nothing
//!   read may be altered data, and a root opened strictly must equal the one opened tolerantly.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

// (some of the shared code serves only tests/model.rs and tests/engine_model.rs)
#[path = "common/fuzz/mod.rs"]
mod fuzz;

fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// The crate's root: corpus directories are relative to it.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file of the directories `dirs` (relative to the crate's root).
fn corpus(dirs: &[&str]) -> Vec<PathBuf> {
    dirs.iter()
        .flat_map(|d| corpus_files(&root().join(d)))
        .collect()
}

/// Runs every file of `files` through `run`; returns the failures (file: message).
fn replay<S>(files: &[PathBuf], mut run: impl FnMut(&[u8]) -> Result<S, String>) -> Vec<String> {
    let mut failures = Vec::new();
    for f in files {
        let data = fs::read(f).expect("read a corpus file");
        let name = f.strip_prefix(root()).unwrap_or(f).display().to_string();
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| run(&data)));
        if std::env::var_os("RAFTWAL_FUZZ_TIMES").is_some() {
            eprintln!("{:8.3}s {name}", t0.elapsed().as_secs_f64());
        }
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failures.push(format!("{name}: {e}")),
            Err(p) => failures.push(format!("{name}: panicked: {}", panic_message(&*p))),
        }
    }
    failures
}

fn check(target: &str, n: usize, failures: &[String], started: Instant) {
    eprintln!(
        "{target}: replayed {n} corpus inputs in {:.1}s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        n > 0,
        "no corpus files for {target}: tests/fuzz/corpus/{target}/ is empty"
    );
    assert!(
        failures.is_empty(),
        "{} of {n} {target} inputs failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Replays target `target`'s committed corpus (`tests/fuzz/corpus/<target>/`) through `run`,
/// prints `summary` of what the passing inputs did, and fails on any input that failed.
fn replay_corpus<S>(
    target: &str,
    run: impl Fn(&[u8]) -> Result<S, String>,
    summary: impl FnOnce(&[S]) -> String,
) {
    let started = Instant::now();
    let files = corpus(&[&format!("tests/fuzz/corpus/{target}")]);
    let mut done = Vec::new();
    let failures = replay(&files, |data| {
        done.push(run(data)?);
        Ok(())
    });
    eprintln!("{target}: {}", summary(&done));
    check(target, files.len(), &failures, started);
}

#[test]
fn open_dir_corpus() {
    replay_corpus("open_dir", fuzz::open_dir::run, |done| {
        let count = |f: fn(&fuzz::open_dir::Stats) -> bool| done.iter().filter(|s| f(s)).count();
        format!(
            "{} mutations applied; directories inspected {}, opened strictly {}, opened \
             tolerantly {}",
            done.iter().map(|s| s.mutations).sum::<usize>(),
            count(|s| s.inspected),
            count(|s| s.strict_opened),
            count(|s| s.tolerant_opened)
        )
    });
}

#[test]
fn ops_model_corpus() {
    replay_corpus("ops_model", fuzz::ops_model::run, |done| {
        format!(
            "{} actions, highest last index {}",
            done.iter().map(|s| s.actions).sum::<usize>(),
            done.iter().map(|s| s.max_last).max().unwrap_or(0)
        )
    });
}

#[test]
fn open_engine_corpus() {
    replay_corpus("open_engine", fuzz::open_engine::run, |done| {
        let count = |f: fn(&fuzz::open_engine::Stats) -> bool| done.iter().filter(|s| f(s)).count();
        format!(
            "{} mutations applied; roots opened strictly {}, opened tolerantly {}",
            done.iter().map(|s| s.mutations).sum::<usize>(),
            count(|s| s.strict_opened),
            count(|s| s.tolerant_opened)
        )
    });
}

/// Reproducers of what the fuzzers found (tests/fuzz/artifacts-kept/<target>/, docs/RELIABILITY.md),
/// all fixed in the engine: they must keep passing.
#[test]
fn past_findings() {
    let started = Instant::now();
    let open_dir = corpus(&["tests/fuzz/artifacts-kept/open_dir"]);
    let ops_model = corpus(&["tests/fuzz/artifacts-kept/ops_model"]);
    let mut failures = replay(&open_dir, fuzz::open_dir::run);
    failures.extend(replay(&ops_model, fuzz::ops_model::run));
    check(
        "past findings",
        open_dir.len() + ops_model.len(),
        &failures,
        started,
    );
}

/// `RAFTWAL_FUZZ_REPLAY=<file or directory>` with `RAFTWAL_FUZZ_TARGET=open_dir|ops_model|open_engine`
/// replays other inputs (e.g. a crash under fuzz/artifacts/), for a debuggable failure under
/// plain `cargo test`. Does nothing without the variables.
#[test]
fn replay_from_env() {
    let Some(path) = std::env::var_os("RAFTWAL_FUZZ_REPLAY") else {
        return;
    };
    let path = PathBuf::from(path);
    let files = if path.is_dir() {
        corpus_files(&path)
    } else {
        vec![path]
    };
    let target = std::env::var("RAFTWAL_FUZZ_TARGET").unwrap_or_else(|_| "open_dir".into());
    let started = Instant::now();
    let failures = match target.as_str() {
        "open_dir" => replay(&files, fuzz::open_dir::run),
        "ops_model" => replay(&files, fuzz::ops_model::run),
        "open_engine" => replay(&files, fuzz::open_engine::run),
        other => panic!("RAFTWAL_FUZZ_TARGET={other}: want open_dir, ops_model or open_engine"),
    };
    check(&target, files.len(), &failures, started);
}

/// The empty input is the intact template directory or image / an empty operation list: each must pass
/// even before any corpus exists (this also checks the template itself).
#[test]
fn empty_inputs_pass() {
    fuzz::open_dir::run(&[]).expect("open_dir on the intact template");
    fuzz::ops_model::run(&[]).expect("ops_model with no operations");
    fuzz::open_engine::run(&[]).expect("open_engine on the intact image");
}
