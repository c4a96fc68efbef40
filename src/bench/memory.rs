//! Peak resident memory of this process, from Linux's `/proc/self/status` (`VmHWM`), and a reset
//! of that peak (`/proc/self/clear_refs`) so several workloads can be measured in one run.

/// Peak resident set size in MiB since start or the last [`reset_peak`]; `None` off Linux.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak to the current resident size (Linux >= 4.0); returns whether it worked.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
