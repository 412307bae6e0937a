//! Dates: what `--at` accepts, how events print their time, and git identities.
//!
//! Times are Unix seconds (UTC). Accepted input: `YYYY-MM-DD` (midnight UTC),
//! `YYYY-MM-DD[T ]HH:MM[:SS]` with an optional `Z` or `±HH[:]MM` offset (UTC when absent),
//! and `@<seconds>` (git's raw form).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "cannot read {input:?} as a date (use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or @<unix seconds>)"
)]
pub struct TimeError {
    pub input: String,
}

use gitmodel_format::time::{civil_from_days, days_from_civil};

/// Parses a date or time (see the module docs) into Unix seconds.
pub fn parse(input: &str) -> Result<i64, TimeError> {
    let err = || TimeError {
        input: input.to_string(),
    };
    let s = input.trim();
    if let Some(secs) = s.strip_prefix('@') {
        let secs = secs.split_whitespace().next().ok_or_else(err)?;
        return secs.parse().map_err(|_| err());
    }
    let num = |t: &str| -> Result<u32, TimeError> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        t.parse().map_err(|_| err())
    };
    let (date, rest) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, ""),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts[..] else {
        return Err(err());
    };
    let (y, m, d) = (num(y)? as i64, num(m)?, num(d)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return Err(err());
    }
    let mut secs = days_from_civil(y, m, d) * 86400;
    if rest.is_empty() {
        return Ok(secs);
    }
    // Time, then an optional zone.
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = (rest[..zone_at].trim(), rest[zone_at..].trim());
    let hms: Vec<&str> = clock.split(':').collect();
    let (h, mi, se) = match hms[..] {
        [h, m] => (num(h)?, num(m)?, 0),
        [h, m, s] => (num(h)?, num(m)?, num(s.split('.').next().unwrap_or(s))?),
        _ => return Err(err()),
    };
    if h > 23 || mi > 59 || se > 60 {
        return Err(err());
    }
    secs += (h * 3600 + mi * 60 + se) as i64;
    if !zone.is_empty() && !zone.eq_ignore_ascii_case("z") {
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 {
            return Err(err());
        }
        let off = num(&digits[..2])? as i64 * 3600 + num(&digits[2..])? as i64 * 60;
        secs -= sign * off;
    }
    Ok(secs)
}

/// `2026-01-31 12:00:00 UTC`.
pub fn format_utc(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let t = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// `2026-01-31`.
pub fn format_date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// A git identity line as `git var GIT_COMMITTER_IDENT` prints it:
/// `Name <email> <seconds> <±hhmm>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub email: String,
    pub time: i64,
    pub tz: String,
}

impl Ident {
    pub fn parse(line: &str) -> Option<Ident> {
        let line = line.trim();
        let open = line.rfind('<')?;
        let close = line.rfind('>')?;
        if close < open {
            return None;
        }
        let name = line[..open].trim().to_string();
        let email = line[open + 1..close].to_string();
        let mut rest = line[close + 1..].split_whitespace();
        let time = rest.next()?.parse().ok()?;
        let tz = rest.next().unwrap_or("+0000").to_string();
        Some(Ident {
            name,
            email,
            time,
            tz,
        })
    }

    /// `Name <email>`.
    pub fn who(&self) -> String {
        format!("{} <{}>", self.name, self.email)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("1970-01-01").unwrap(), 0);
        assert_eq!(parse("2026-01-01").unwrap(), 1767225600);
        assert_eq!(parse("2026-01-01T00:00:00Z").unwrap(), 1767225600);
        assert_eq!(parse("2026-01-01 01:30").unwrap(), 1767225600 + 5400);
        assert_eq!(parse("2026-01-01T02:00:00+02:00").unwrap(), 1767225600);
        assert_eq!(
            parse("2026-01-01T00:00:00-0100").unwrap(),
            1767225600 + 3600
        );
        assert_eq!(parse("@1767225600 +0000").unwrap(), 1767225600);
        assert_eq!(parse("2024-02-29").unwrap(), 1709164800);
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-01-01T25:00",
            "2026-01",
            "@x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format_utc(1767225600 + 3661), "2026-01-01 01:01:01 UTC");
        assert_eq!(format_date(1709164800), "2024-02-29");
        let i = Ident::parse("Test Committer <c@example.com> 1767225600 +0000").unwrap();
        assert_eq!(i.who(), "Test Committer <c@example.com>");
        assert_eq!(i.time, 1767225600);
        assert!(Ident::parse("nobody").is_none());
    }
}
