//! Ranges of rounds or cases a test takes from the environment, for long runs by hand.

/// `first..first + count`, each from its environment variable (`first_var`, `count_var`) when
/// it is set to a number, else 0 and `default_count`.
pub fn env_range(first_var: &str, count_var: &str, default_count: u64) -> std::ops::Range<u64> {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let first = var(first_var, 0);
    first..first + var(count_var, default_count)
}
