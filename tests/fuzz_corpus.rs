//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same logic the
//! cargo-fuzz targets run (`fuzz/fuzz_targets/common/`, included here with `#[path]`), so every
//! input the fuzzers kept is checked under plain `cargo test` on a stable toolchain, without
//! libFuzzer. See docs/RELIABILITY.md for how the corpora were grown.
//!
//! - `open_dir`: a damaged copy of a valid WAL directory is opened in both recovery modes and
//!   read in full; nothing may panic, and nothing read may be altered data.
//! - `ops_model`: an operation sequence runs on `DiskStorage` and on a reference model; they
//!   must agree after every operation.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "../fuzz/fuzz_targets/common/mod.rs"]
mod common;

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

/// Runs every file of `dirs` through `run`; returns the failures (file: message).
fn replay<S>(
    dirs: &[&str],
    mut run: impl FnMut(&[u8]) -> Result<S, String>,
) -> (usize, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    let mut failures = Vec::new();
    for d in dirs {
        for f in corpus_files(&root.join(d)) {
            let data = fs::read(&f).expect("read a corpus file");
            n += 1;
            let name = f.strip_prefix(root).unwrap_or(&f).display().to_string();
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
    }
    (n, failures)
}

fn check(target: &str, n: usize, failures: &[String], started: Instant) {
    eprintln!(
        "{target}: replayed {n} corpus inputs in {:.1}s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        n > 0,
        "no corpus files for {target}: fuzz/corpus/{target}/ is empty"
    );
    assert!(
        failures.is_empty(),
        "{} of {n} {target} inputs failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn open_dir_corpus() {
    let started = Instant::now();
    let mut mutations = 0;
    let mut opened = 0;
    let (n, failures) = replay(&["fuzz/corpus/open_dir"], |data| {
        let s = common::open_dir::run(data)?;
        mutations += s.mutations;
        opened += usize::from(s.tolerant_opened);
        let _ = (s.strict_opened, s.inspected);
        Ok(())
    });
    eprintln!("open_dir: {mutations} mutations applied, {opened} directories opened");
    check("open_dir", n, &failures, started);
}

#[test]
fn ops_model_corpus() {
    let started = Instant::now();
    let mut actions = 0;
    let mut max_last = 0;
    let (n, failures) = replay(&["fuzz/corpus/ops_model"], |data| {
        let s = common::ops_model::run(data)?;
        actions += s.actions;
        max_last = max_last.max(s.max_last);
        Ok(())
    });
    eprintln!("ops_model: {actions} actions, highest last index {max_last}");
    check("ops_model", n, &failures, started);
}

/// Reproducers of what the fuzzers found (fuzz/artifacts-kept/<target>/, docs/RELIABILITY.md),
/// all fixed in the engine: they must keep passing.
#[test]
fn past_findings() {
    let started = Instant::now();
    let (n1, mut failures) = replay(&["fuzz/artifacts-kept/open_dir"], common::open_dir::run);
    let (n2, f2) = replay(&["fuzz/artifacts-kept/ops_model"], common::ops_model::run);
    failures.extend(f2);
    check("past findings", n1 + n2, &failures, started);
}

/// `RAFTWAL_FUZZ_REPLAY=<file or directory>` with `RAFTWAL_FUZZ_TARGET=open_dir|ops_model`
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
    let mut failures = Vec::new();
    for f in &files {
        let data = fs::read(f).expect("read an input");
        let r = catch_unwind(AssertUnwindSafe(|| match target.as_str() {
            "ops_model" => common::ops_model::run(&data).map(|_| ()),
            _ => common::open_dir::run(&data).map(|_| ()),
        }));
        match r {
            Ok(Ok(())) => eprintln!("{}: ok", f.display()),
            Ok(Err(e)) => failures.push(format!("{}: {e}", f.display())),
            Err(p) => failures.push(format!("{}: panicked: {}", f.display(), panic_message(&*p))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The empty input is the intact template directory / an empty operation list: both must pass
/// even before any corpus exists (this also checks the template itself).
#[test]
fn empty_inputs_pass() {
    common::open_dir::run(&[]).expect("open_dir on the intact template");
    common::ops_model::run(&[]).expect("ops_model with no operations");
}
