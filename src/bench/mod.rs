//! Benchmarks (timed here, never in tests): the training step (SFT vs Pearl), generation
//! latency, and the cost of answering Pearl-style versus through tool calls.

pub mod answer_cost;
pub mod generate;
pub mod load;
pub mod seq_len;
pub mod train;

/// Peak resident memory of this process so far (`VmHWM` of /proc/self/status), in bytes;
/// `None` where the file does not exist (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// Resident memory of this process now (`VmRSS`), in bytes; `None` where it cannot be read.
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// A `/proc/self/status` line's value in KiB.
fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak to the current resident size (Linux >= 4.0, `/proc/self/clear_refs`), so
/// several workloads can be measured in one process; returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time (user + system, all threads) this process has used so far, in seconds, from
/// `/proc/self/stat`; `None` where it does not exist. On a shared machine this measures the work a
/// step does more steadily than wall-clock time does. Assumes the usual 100 clock ticks a second
/// (`getconf CLK_TCK`), as reading the real value would need libc.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name (which may contain spaces): utime and stime
    // are fields 14 and 15 of the line, i.e. 12 and 13 after the `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Median of a sample (mean of the middle two for even sizes); 0 for an empty one.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        if cfg!(target_os = "linux") {
            let t0 = process_cpu_seconds().expect("/proc/self/stat");
            let mut x = 0u64;
            while process_cpu_seconds().expect("stat") < t0 + 0.05 {
                x = x.wrapping_add(1);
            }
            assert!(x > 0);
        }
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = peak_rss_bytes().expect("VmHWM");
            // A running test binary holds at least a megabyte.
            assert!(rss > 1 << 20, "{rss}");
        }
    }
}
