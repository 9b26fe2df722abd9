//! What a flush costs on this machine's disk when a second file is written between flushes: the
//! device fact behind the many-group rows of docs/PERFORMANCE.md ("What the device allows at
//! N = 16 and 128"). No raftwal code runs here: only files, `pwrite` and `fdatasync`.
//!
//! A committer writes `size` bytes into a preallocated, already-written file and flushes it
//! (`fdatasync`), then spends `gap` microseconds of CPU (a round's own work), 3,000 times. In
//! mode `alone` nothing else writes; in mode `second` another thread writes as many bytes into
//! a second file right after each flush and starts their write-back (`POSIX_FADV_DONTNEED`),
//! which is what an engine writing each commit twice (a journal, then the group's own file)
//! does at best: the second write lands in the window the round's CPU work leaves the disk
//! idle. The modes alternate; medians of the runs' statistics are printed.
//!
//! ```sh
//! cargo run --release --example device_flush                  # 64 KiB, 100 us (N = 16)
//! cargo run --release --example device_flush -- 524288 800    # 512 KiB, 800 us (N = 128)
//! ```

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 3_000;
const AREA: u64 = 64 << 20;
const RUNS: usize = 3;

fn main() -> std::io::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let size = args.first().copied().unwrap_or(64 << 10) as usize;
    let gap = Duration::from_micros(args.get(1).copied().unwrap_or(100));
    let dir = tempfile::tempdir_in(".")?;
    println!(
        "{} KiB per flush, {} us of CPU between flushes, {ROUNDS} flushes per run, {RUNS} runs per mode",
        size >> 10,
        gap.as_micros()
    );
    let mut results: Vec<(&str, Vec<[f64; 3]>)> = vec![("alone", vec![]), ("second", vec![])];
    for _ in 0..RUNS {
        for (mode, runs) in results.iter_mut() {
            runs.push(run(dir.path(), size, gap, *mode == "second")?);
        }
    }
    println!("mode     flush p50 ms   p99 ms   mean ms   (medians of the runs)");
    for (mode, runs) in &results {
        let med = |k: usize| {
            let mut v: Vec<f64> = runs.iter().map(|r| r[k]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!("{mode:8} {:>10.3} {:>8.3} {:>9.3}", med(0), med(1), med(2));
    }
    Ok(())
}

/// One run: the flush latencies' p50, p99 and mean, in milliseconds.
fn run(dir: &Path, size: usize, gap: Duration, second: bool) -> std::io::Result<[f64; 3]> {
    let journal = prepared(&dir.join("journal"), true)?;
    let group = prepared(&dir.join("group"), false)?;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + 13) as u8).collect();
    let (tx, rx) = mpsc::channel::<u64>();
    let writer = second.then(|| {
        let data = data.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            for off in rx {
                group.write_all_at(&data, off)?;
                let len = std::num::NonZeroU64::new(data.len() as u64);
                let _ = rustix::fs::fadvise(&group, off, len, rustix::fs::Advice::DontNeed);
            }
            Ok(())
        })
    });
    let mut took = Vec::with_capacity(ROUNDS);
    let mut off = 0u64;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        journal.write_all_at(&data, off)?;
        journal.sync_data()?;
        took.push(t.elapsed().as_secs_f64() * 1e3);
        if second {
            let _ = tx.send(off);
        }
        off = (off + size as u64) % (AREA - size as u64);
        let until = Instant::now() + gap;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    drop(tx);
    if let Some(w) = writer {
        w.join()
            .map_err(|_| std::io::Error::other("writer panicked"))??;
    }
    took.sort_by(f64::total_cmp);
    let mean = took.iter().sum::<f64>() / took.len() as f64;
    Ok([took[ROUNDS / 2], took[ROUNDS * 99 / 100], mean])
}

/// A file of `AREA` bytes, allocated; `written`: every byte written and flushed once (as a
/// recycled journal segment is), so that its flushes carry no extent conversion.
fn prepared(path: &Path, written: bool) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.set_len(AREA)?;
    if written {
        let chunk = vec![0x5au8; 1 << 20];
        for at in (0..AREA).step_by(chunk.len()) {
            f.write_all_at(&chunk, at)?;
        }
    }
    f.sync_all()?;
    Ok(f)
}
