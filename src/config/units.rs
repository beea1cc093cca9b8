//! Durations and rates as the configuration writes them ("90s", "100us", "3/minute"), with
//! typed errors whose text says what is expected; the caller locates them in the file.

use crate::core::policy::{MAX_TIMEOUT, MIN_TIMEOUT};
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePer {
    Second,
    Minute,
    Hour,
    Day,
}

impl RatePer {
    /// The unit as nft writes it (`limit rate 3/minute`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RatePer::Second => "second",
            RatePer::Minute => "minute",
            RatePer::Hour => "hour",
            RatePer::Day => "day",
        }
    }
}

impl fmt::Display for RatePer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `log_rate` that is not "N/unit" with N at least 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a rate like \"3/minute\" (N/second, N/minute, N/hour or N/day, N at least 1)"
)]
pub struct RateError(pub String);

/// "3/minute" → (3, Minute).
///
/// # Errors
/// `RateError` for anything but N/second, N/minute, N/hour or N/day, N at least 1.
pub fn parse_log_rate(text: &str) -> Result<(u32, RatePer), RateError> {
    let bad = || RateError(text.to_string());
    let (n, per) = text.trim().split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = match per.trim() {
        "second" => RatePer::Second,
        "minute" => RatePer::Minute,
        "hour" => RatePer::Hour,
        "day" => RatePer::Day,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    Ok((n, per))
}

/// `[queue] coalesce` by default: under a flood one wake-up per 100 µs rather than one per
/// few packets (a wake-up costs more than the packets it reads).
pub const DEFAULT_COALESCE: Duration = Duration::from_micros(100);
/// The longest `coalesce`: it adds to time to block under a flood.
pub const MAX_COALESCE: Duration = Duration::from_millis(1);

/// A `coalesce` that is not "0" or a duration up to `MAX_COALESCE`.
#[derive(Debug, thiserror::Error)]
pub enum CoalesceError {
    #[error("'{text}' is not a duration like \"100us\" or \"0\" (off): {source}")]
    NotDuration {
        text: String,
        source: humantime::DurationError,
    },
    #[error("'{0}' is longer than the 1ms allowed")]
    TooLong(String),
}

/// `[queue] coalesce`: "0" (off), or a duration up to `MAX_COALESCE` such as "100us".
///
/// # Errors
/// `CoalesceError` for what is not "0" or a duration up to `MAX_COALESCE`.
pub fn parse_coalesce(text: &str) -> Result<Duration, CoalesceError> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(text).map_err(|source| CoalesceError::NotDuration {
        text: text.to_string(),
        source,
    })?;
    if d > MAX_COALESCE {
        return Err(CoalesceError::TooLong(text.to_string()));
    }
    Ok(d)
}

/// A duration outside what `parse_duration` takes. `permanent` is the hint that "0" alone
/// means permanent where it does.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("a duration of 0 is not allowed here")]
    Zero,
    #[error("'{text}' is not a duration like \"90s\", \"5m\" or \"1h\": {source}")]
    NotDuration {
        text: String,
        source: humantime::DurationError,
    },
    #[error("'{text}' is shorter than 1s{}", hint(*.zero_is_never))]
    TooShort { text: String, zero_is_never: bool },
    #[error("'{text}' is longer than the 100 years allowed{}", hint(*.zero_is_never))]
    TooLong { text: String, zero_is_never: bool },
    #[error("'{0}' is not a whole number of seconds")]
    Fraction(String),
}

fn hint(zero_is_never: bool) -> &'static str {
    if zero_is_never {
        " (\"0\" alone means permanent)"
    } else {
        ""
    }
}

/// A duration as the configuration and `portsentry block --timeout` take it: "90s", "2h",
/// "7d", whole seconds from 1 s to a century; "0" alone is "never" (`None`) where
/// `zero_is_never` (a timeout of "0s" is a mistake more often than a wish for a permanent
/// block).
///
/// # Errors
/// `DurationError` for what is not whole seconds from 1 s to a century (or "0" where it means never).
pub fn parse_duration(text: &str, zero_is_never: bool) -> Result<Option<Duration>, DurationError> {
    let text = text.trim();
    if text == "0" {
        return if zero_is_never {
            Ok(None)
        } else {
            Err(DurationError::Zero)
        };
    }
    let d = humantime::parse_duration(text).map_err(|source| DurationError::NotDuration {
        text: text.to_string(),
        source,
    })?;
    let text = text.to_string();
    if d < MIN_TIMEOUT {
        return Err(DurationError::TooShort {
            text,
            zero_is_never,
        });
    }
    if d > MAX_TIMEOUT {
        return Err(DurationError::TooLong {
            text,
            zero_is_never,
        });
    }
    if d.subsec_nanos() != 0 {
        return Err(DurationError::Fraction(text));
    }
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text the admin reads is the contract the callers locate in the file.
    #[test]
    fn errors_say_what_is_expected() {
        assert_eq!(
            parse_log_rate("3/min").unwrap_err().to_string(),
            "'3/min' is not a rate like \"3/minute\" (N/second, N/minute, N/hour or N/day, N at least 1)"
        );
        assert_eq!(parse_log_rate(" 10 / hour "), Ok((10, RatePer::Hour)));
        assert_eq!(
            parse_coalesce("2ms").unwrap_err().to_string(),
            "'2ms' is longer than the 1ms allowed"
        );
        assert!(parse_coalesce("fast")
            .unwrap_err()
            .to_string()
            .starts_with("'fast' is not a duration like \"100us\" or \"0\" (off): "));
        assert_eq!(
            parse_duration("0", false).unwrap_err().to_string(),
            "a duration of 0 is not allowed here"
        );
        assert_eq!(
            parse_duration("500ms", true).unwrap_err().to_string(),
            "'500ms' is shorter than 1s (\"0\" alone means permanent)"
        );
        assert_eq!(
            parse_duration("500ms", false).unwrap_err().to_string(),
            "'500ms' is shorter than 1s"
        );
        assert_eq!(
            parse_duration("101years", false).unwrap_err().to_string(),
            "'101years' is longer than the 100 years allowed"
        );
        assert_eq!(
            parse_duration("1500ms", false).unwrap_err().to_string(),
            "'1500ms' is not a whole number of seconds"
        );
        assert_eq!(
            parse_duration("2h", true).unwrap(),
            Some(Duration::from_secs(7200))
        );
    }
}
