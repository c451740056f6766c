//! Stand-ins for the web APIs jarvis talks to that cannot run on a test machine, each a small
//! in-memory server run as its own process (`src/bin/NAME-standin.rs`), plus what tests need
//! around them: spawning a stand-in and reading its address ([`process`]), and checking
//! recorded requests against the API's published OpenAPI document ([`openapi`]).
//!
//! Every stand-in binary listens on 127.0.0.1 on the port given by `--port` (0 picks a free
//! one) and, once it accepts connections, prints exactly one line `LISTENING http://ADDR` on
//! stdout. Paths under `/_standin/` are the stand-in's own test controls, never the API's.

use std::io::Write;

use anyhow::Context;

pub mod gist;
pub mod linode;
pub mod openapi;
pub mod process;

/// Serves `router` on 127.0.0.1:`port` until the process is killed, after announcing the
/// address on stdout.
pub async fn serve(router: axum::Router, port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "LISTENING http://{addr}")?;
    out.flush()?;
    drop(out);
    axum::serve(listener, router).await?;
    Ok(())
}

/// Now as an ISO 8601 UTC timestamp without zone (`2024-05-01T12:00:00`), the way several
/// APIs print times.
pub fn iso_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(super::civil_from_days(19_782), (2024, 2, 29));
    }
}
