//! The watchdog's own log: `YYYY/MM/DD HH:MM:SS message` on stderr, the format of Go's `log`
//! package that the reference watchdogs use (UTC here). `RUST_LOG` sets the level (default info;
//! `config` reads it).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// `filter`: `RUST_LOG`'s value (`info` when unset).
pub fn init(filter: Option<String>) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Info);
    if let Some(filter) = filter {
        builder.parse_filters(&filter);
    }
    builder
        .format(|out, record| {
            let level = match record.level() {
                log::Level::Error | log::Level::Warn | log::Level::Info => "",
                log::Level::Debug => "debug: ",
                log::Level::Trace => "trace: ",
            };
            STAMP.with_borrow_mut(|stamp| {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                if stamp.0 != now || stamp.1.is_empty() {
                    *stamp = (now, timestamp(SystemTime::now()));
                }
                writeln!(out, "{} {level}{}", stamp.1, record.args())
            })
        })
        .init();
}

thread_local! {
    /// The last second formatted, per thread: a busy watchdog logs many lines per second.
    static STAMP: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// `2026/11/22 13:04:05` in UTC.
pub fn timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{year:04}/{month:02}/{day:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Where bytes that are not log lines go (placeholder until the log writer lands).
pub enum Output {
    Stdout,
}

/// Writes `bytes` whole to the watchdog's stdout.
pub fn pass_on(_to: Output, bytes: bytes::Bytes) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&bytes).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_like_go_log() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970/01/01 00:00:00");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3723)), "2000/02/29 01:02:03");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(1_795_305_600)), "2026/11/22 00:00:00");
    }
}
