//! Durations as operators write them in the configuration: `100ms`, `1s`, `2m`,
//! `1h`, or several parts in decreasing order such as `1m30s`.
//!
//! A bare number is rejected: `timeout: 5` could mean seconds or milliseconds, and
//! guessing wrong turns a one-second failover into a twenty-minute one.

use std::time::Duration;

/// Why a duration string was rejected; the text is shown to the operator as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("empty duration; write it with a unit, like 100ms, 1s or 2m")]
    Empty,
    /// A number without a unit, or a unit without a number.
    #[error(
        "`{0}` is not a duration; write a whole number followed by a unit (ms, s, m or h), like 100ms, 1s or 1m30s"
    )]
    Malformed(String),
    /// A unit other than the ones listed.
    #[error("unknown unit `{unit}` in `{text}`; use ms, s, m or h")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// Units out of order or repeated, such as `1s1m`.
    #[error("`{0}`: write the parts from the largest unit to the smallest, each unit once")]
    Order(String),
    /// The value does not fit a `Duration` (or is absurdly large).
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// Parses `text` as a duration (see the module documentation for the syntax).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(trimmed.to_owned());
    let mut total = Duration::ZERO;
    // The rank of the previous unit: each part must use a strictly smaller unit.
    let mut previous_rank = usize::MAX;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(malformed());
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(malformed());
        }
        let (rank, unit_duration) = match unit {
            "h" => (0, Duration::from_secs(3600)),
            "m" => (1, Duration::from_secs(60)),
            "s" => (2, Duration::from_secs(1)),
            "ms" => (3, Duration::from_millis(1)),
            _ => {
                return Err(DurationError::UnknownUnit {
                    text: trimmed.to_owned(),
                    unit: unit.to_owned(),
                });
            }
        };
        if previous_rank != usize::MAX && rank <= previous_rank {
            return Err(DurationError::Order(trimmed.to_owned()));
        }
        previous_rank = rank;
        let overflow = || DurationError::Overflow(trimmed.to_owned());
        let count: u32 = number.parse().map_err(|_| overflow())?;
        let part = unit_duration.checked_mul(count).ok_or_else(overflow)?;
        total = total.checked_add(part).ok_or_else(overflow)?;
        rest = next;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it back (whole milliseconds).
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        let s = ms / 1000;
        if s.is_multiple_of(60) && s != 0 {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_unit_and_combinations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_is_ambiguous_or_wrong() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("5"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("ms"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("-1s"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("1.5s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1 s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("3d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1s1m"),
            Err(DurationError::Order(_))
        ));
        assert!(matches!(
            parse_duration("1s2s"),
            Err(DurationError::Order(_))
        ));
        assert!(matches!(
            parse_duration("99999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn format_round_trips() {
        for ms in [1, 100, 999, 1000, 1500, 60_000, 90_000, 3_600_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms} ms");
        }
    }
}
