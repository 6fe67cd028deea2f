//! Time as a value. Nothing here reads the clock: callers pass `now` in.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    #[must_use]
    pub const fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// ISO-8601 / RFC 3339 in UTC with millisecond precision, e.g.
    /// `2026-04-23T14:47:12.000Z` (the form the SDK documents).
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let millis = self.0.rem_euclid(1000);
        match OffsetDateTime::from_unix_timestamp(secs) {
            Ok(dt) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                millis
            ),
            // Out of the representable range: fall back to the raw number, never panic.
            Err(_) => self.0.to_string(),
        }
    }

    /// Parses an RFC 3339 date-time or a decimal number of epoch milliseconds.
    pub fn parse(input: &str) -> Option<Self> {
        let input = input.trim();
        if let Ok(ms) = input.parse::<i64>() {
            return Some(Self(ms));
        }
        let dt = OffsetDateTime::parse(input, &Rfc3339).ok()?;
        let ms = dt.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(ms).ok().map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_sdk_expects() {
        let t = Timestamp::from_millis(1_776_955_632_000);
        assert_eq!(t.to_rfc3339(), "2026-04-23T14:47:12.000Z");
        assert_eq!(
            Timestamp::from_millis(1_776_955_632_042).to_rfc3339(),
            "2026-04-23T14:47:12.042Z"
        );
    }

    #[test]
    fn parses_both_forms() {
        assert_eq!(
            Timestamp::parse("1776955632000"),
            Some(Timestamp::from_millis(1_776_955_632_000))
        );
        assert_eq!(
            Timestamp::parse("2026-04-23T14:47:12.000Z"),
            Some(Timestamp::from_millis(1_776_955_632_000))
        );
        assert_eq!(Timestamp::parse("yesterday"), None);
    }
}
