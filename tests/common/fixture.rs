//! A directory built once per test process and shared by its tests (included with `#[path]` by
//! tests/cli.rs and tests/cli_engine.rs).
//!
//! A `TempDir` in a `static` is never dropped, so every run left its fixture behind (65-97 MiB
//! each for the engine image). Here the fixture lives in the system temporary directory under
//! a name carrying the process id; a process removes the fixtures of processes no longer
//! running before it builds its own, so at most the last run's copy is ever left.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// The directory `std::env::temp_dir()/raftwal-fixture-<name>-<pid>`, made by `build` (which
/// gets the empty directory's path) on the first call in this process.
pub fn shared(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let tmp = std::env::temp_dir();
    let prefix = format!("raftwal-fixture-{name}-");
    remove_left_behind(&tmp, &prefix);
    let dir = tmp.join(format!("{prefix}{}", std::process::id()));
    // A directory under this process id can only be a dead process's whose id was reused.
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    build(&dir);
    dir
}

/// Removes the fixtures named `<prefix><pid>` whose process is gone (Linux: no `/proc/<pid>`).
fn remove_left_behind(tmp: &Path, prefix: &str) {
    let Ok(list) = fs::read_dir(tmp) else {
        return;
    };
    for item in list.flatten() {
        let name = item.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(item.path());
        }
    }
}
