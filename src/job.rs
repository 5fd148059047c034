//! The wire contract's small parsers shared by the CLI and the queue: thumbnail times.

use crate::error::{JobError, Result};

/// Parses `HH:MM:SS[.fff]`, `MM:SS[.fff]` or plain seconds (`5`, `5.5`) into seconds.
pub fn parse_timestamp(text: &str) -> Result<f64> {
    let bad = || {
        JobError::invalid_request(format!(
            "invalid time {text:?}: expected HH:MM:SS[.fff] or seconds"
        ))
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let parts: Vec<&str> = t.split(':').collect();
    if parts.len() > 3 {
        return Err(bad());
    }
    let mut total = 0.0;
    for (i, part) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        let valid = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_digit() || (last && c == '.'))
            && part.matches('.').count() <= 1;
        if !valid {
            return Err(bad());
        }
        let v: f64 = part.parse().map_err(|_| bad())?;
        if i > 0 && v >= 60.0 {
            return Err(bad());
        }
        total = total * 60.0 + v;
    }
    if !total.is_finite() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_accepted_form() {
        assert_eq!(parse_timestamp("00:00:05").unwrap(), 5.0);
        assert_eq!(parse_timestamp("01:02:03.5").unwrap(), 3723.5);
        assert_eq!(parse_timestamp("2:30").unwrap(), 150.0);
        assert_eq!(parse_timestamp("7.25").unwrap(), 7.25);
        for bad in ["", "-1", "1:99", "a", "1:2:3:4", "1e3", "1..2", "nan"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }
}
