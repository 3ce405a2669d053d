//! The value syntaxes of the configuration: durations as the Go watchdogs read and print them,
//! booleans, ports, sizes, paths and URLs. Each parser returns the reason a value is refused; the
//! caller adds the variable's name and the value.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hyper::Uri;
use hyper::http::uri::Authority;

use super::Mode;

/// `upstream_url`: where the http mode's function listens, parsed once. Request paths are joined
/// to its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub authority: Authority,
    /// The URL's path without its trailing `/` (`""` for none).
    pub base: String,
}

impl UpstreamUrl {
    /// An `http://host[:port][/path]` URL, without user info or query.
    pub fn parse(url: &str) -> Result<UpstreamUrl, String> {
        const EXPECTED: &str = "expected a URL like http://127.0.0.1:5000 (optionally with a path)";
        let uri: Uri = url.parse().map_err(|_| EXPECTED.to_string())?;
        let authority = uri.authority().cloned().ok_or_else(|| EXPECTED.to_string())?;
        let after_host = authority.as_str().rsplit_once(']').map_or(authority.as_str(), |(_, rest)| rest);
        let bad_port = after_host.contains(':') && uri.port_u16().is_none();
        if uri.scheme_str() != Some("http")
            || authority.host().is_empty()
            || bad_port
            || authority.as_str().contains('@')
        {
            return Err(EXPECTED.into());
        }
        if uri.query().is_some() {
            return Err("a query cannot be joined with the request's; remove it".into());
        }
        Ok(UpstreamUrl { base: uri.path().trim_end_matches('/').to_string(), authority })
    }

    /// The host, without the brackets of an IPv6 address.
    pub fn host(&self) -> &str {
        self.authority.host().trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(80)
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.base)
    }
}

/// The path (and query) that `/_/ready` sends to the function.
pub fn ready_path(value: &str) -> Result<Uri, String> {
    const EXPECTED: &str = "expected a path like /ready";
    if !value.starts_with('/') {
        return Err(EXPECTED.into());
    }
    value.parse().map_err(|_| EXPECTED.into())
}

/// `$TMPDIR/.lock`, the file whose presence means "healthy".
pub fn lock_path(tmpdir: &str) -> PathBuf {
    PathBuf::from(tmpdir).join(".lock")
}

/// One of the five modes, by the name `mode` takes.
pub fn mode(value: &str) -> Result<Mode, String> {
    Mode::ALL
        .into_iter()
        .find(|mode| mode.name() == value)
        .ok_or_else(|| "expected classic, streaming, serializing, http or static".into())
}

/// `true`/`false`/`1`/`0` in any case. (The references accept only the exact `"true"` and treat
/// everything else as false, so `cgi_headers=1` turned the feature off.)
pub fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true, false, 1 or 0".into()),
    }
}

pub fn port(value: &str) -> Result<u16, String> {
    value.parse::<u16>().map_err(|_| "expected a port number from 0 to 65535".into())
}

pub fn log_format(value: &str) -> Result<crate::logging::Format, String> {
    match value {
        "text" => Ok(crate::logging::Format::Text),
        "json" => Ok(crate::logging::Format::Json),
        _ => Err("expected text or json".into()),
    }
}

pub fn log_buffer_size(value: &str) -> Result<Option<usize>, String> {
    match value.parse::<i64>() {
        Ok(n) if n < 0 => Ok(None),
        Ok(0) => Err("expected a positive number of bytes, or -1 for unbounded".into()),
        Ok(n) => Ok(Some(usize::try_from(n).map_err(|_| "too large")?)),
        Err(_) => Err("expected a number of bytes, or -1 for unbounded".into()),
    }
}

/// A size in bytes: a number (`1048576`), or one with a unit, `KB`, `MB`, `GB` (powers of 1000)
/// or `KiB`, `MiB`, `GiB` (powers of 1024). `0` means "no limit".
pub fn size(value: &str) -> Result<Option<u64>, String> {
    const EXPECTED: &str = "expected bytes, or a size like 512KiB, 4MiB or 1GB";
    let digits = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(digits);
    let number: u64 = number.parse().map_err(|_| EXPECTED.to_string())?;
    let scale: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(EXPECTED.into()),
    };
    let bytes = number.checked_mul(scale).ok_or("too large")?;
    Ok((bytes != 0).then_some(bytes))
}

/// A timeout where 0 means "none".
pub fn timeout(value: &str) -> Result<Option<Duration>, String> {
    duration(value).map(|d| (!d.is_zero()).then_some(d))
}

/// Go's longest duration (`math.MaxInt64` nanoseconds, about 292 years). Larger values can make
/// `Instant + timeout` overflow, which panics in every request.
pub const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Whole seconds (`"10"`) or a Go duration (`"1m30s"`, `"500ms"`, `"1.5h"`), at most
/// [`MAX_DURATION`].
pub fn duration(value: &str) -> Result<Duration, String> {
    parse_duration(value)?
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("too large, the limit is {}", go_duration(MAX_DURATION)))
}

/// `None` when the value is too large.
fn parse_duration(value: &str) -> Result<Option<Duration>, String> {
    const EXPECTED: &str = "expected seconds or a duration like 10s, 1m30s or 500ms";
    let digits = value.strip_prefix('+').unwrap_or(value);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(digits.parse::<u64>().ok().map(Duration::from_secs));
    }
    let mut rest = digits;
    if rest.is_empty() || rest.starts_with('-') {
        return Err(EXPECTED.into());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let number: f64 = number.parse().map_err(|_| EXPECTED.to_string())?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(EXPECTED.into()),
        };
        total += number * seconds;
        rest = after;
    }
    Ok(Duration::try_from_secs_f64(total).ok())
}

/// Formats like Go's `time.Duration.String`: `30s`, `1m30s`, `1h0m0s`, `500ms`, `1.5s`, `0s`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (div, unit) = match nanos {
            n if n < 1_000 => (1, "ns"),
            n if n < 1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        return format!("{}{unit}", trim_fraction(nanos, div));
    }
    let secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let seconds = trim_fraction(u128::from((secs % 60) as u64) * 1_000_000_000 + frac, 1_000_000_000);
    match (secs / 3600, secs / 60 % 60) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / div` with the fraction written without trailing zeros.
fn trim_fraction(value: u128, div: u128) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}
