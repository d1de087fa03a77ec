//! Durations as people write them in plans: `90`, `90s`, `2m`, `1h30m`, `120 minutes`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in a plan. Integers are seconds; strings are a sum of `<n><unit>` parts with
/// units `ms`, `s`, `m`, `h`, `d` (and their long forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanDuration(pub Duration);

impl PlanDuration {
    /// The longest duration a plan may hold: 365 days. Longer ones are refused when they are
    /// read, so that adding one to a clock can never overflow (each key has a narrower range of
    /// its own, see `docs/plan.md`).
    pub const MAX: PlanDuration = PlanDuration(Duration::from_secs(365 * 86_400));

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// A number of seconds, refused when negative, not a number, or longer than [`Self::MAX`].
    pub fn from_secs_f64(secs: f64) -> Result<Self, String> {
        if secs.is_nan() || secs < 0.0 {
            return Err(format!("`{secs}` is not a duration: it cannot be negative"));
        }
        match Duration::try_from_secs_f64(secs) {
            Ok(d) if d <= Self::MAX.0 => Ok(PlanDuration(d)),
            // `1e300`, not three hundred digits.
            _ if secs >= 1e15 => Err(too_long(&format!("{secs:e}"))),
            _ => Err(too_long(&secs.to_string())),
        }
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty duration".into());
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            return match t.parse::<u64>() {
                Ok(secs) if secs <= Self::MAX.0.as_secs() => {
                    Ok(PlanDuration(Duration::from_secs(secs)))
                }
                _ => Err(too_long(text)),
            };
        }
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            rest = rest.trim_start();
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "`{text}` is not a duration: expected a number at `{rest}` (write e.g. 90s, 2m, 1h30m)"
                ));
            }
            let number: f64 = rest[..digits].parse().map_err(|_| {
                format!(
                    "`{text}` is not a duration: bad number `{}`",
                    &rest[..digits]
                )
            })?;
            rest = rest[digits..].trim_start();
            let unit_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            let secs = match unit {
                "ms" => 0.001,
                "s" | "sec" | "secs" | "second" | "seconds" | "" => 1.0,
                "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
                "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
                "d" | "day" | "days" => 86400.0,
                other => {
                    return Err(format!(
                        "`{text}` is not a duration: unknown unit `{other}` (use ms, s, m, h or d)"
                    ));
                }
            };
            // Each part and the sum are bounded, so neither the conversion nor the addition
            // can overflow, whatever the digits.
            let part = Self::from_secs_f64(number * secs).map_err(|_| too_long(text))?;
            total = total
                .checked_add(part.0)
                .filter(|d| *d <= Self::MAX.0)
                .ok_or_else(|| too_long(text))?;
            rest = &rest[unit_len..];
        }
        Ok(PlanDuration(total))
    }
}

fn too_long(text: &str) -> String {
    format!("`{text}` is too long a duration: the longest a plan may hold is 365d")
}

impl fmt::Display for PlanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ms = d.subsec_millis();
        let mut s = d.as_secs();
        if s == 0 && ms > 0 {
            return write!(f, "{ms}ms");
        }
        let days = s / 86_400;
        s %= 86_400;
        let h = s / 3600;
        s %= 3600;
        let m = s / 60;
        s %= 60;
        let mut out = String::new();
        if days > 0 {
            out.push_str(&format!("{days}d"));
        }
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if m > 0 {
            out.push_str(&format!("{m}m"));
        }
        if s > 0 || out.is_empty() {
            out.push_str(&format!("{s}s"));
        }
        f.write_str(&out)
    }
}

impl Serialize for PlanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PlanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PlanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 90, \"90s\", \"2m\" or \"1h30m\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PlanDuration, E> {
                PlanDuration::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PlanDuration, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom("a duration cannot be negative")),
                }
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<PlanDuration, E> {
                PlanDuration::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<PlanDuration, E> {
                match u128::try_from(v) {
                    Ok(v) => self.visit_u128(v),
                    Err(_) => Err(E::custom("a duration cannot be negative")),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PlanDuration, E> {
                PlanDuration::from_secs_f64(v).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PlanDuration, E> {
                PlanDuration::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let p = |s| PlanDuration::parse(s).unwrap().get();
        assert_eq!(p("90"), Duration::from_secs(90));
        assert_eq!(p("90s"), Duration::from_secs(90));
        assert_eq!(p("2m"), Duration::from_secs(120));
        assert_eq!(p("1h30m"), Duration::from_secs(5400));
        assert_eq!(p("120 minutes"), Duration::from_secs(7200));
        assert_eq!(p("250ms"), Duration::from_millis(250));
        assert_eq!(p("1.5s"), Duration::from_millis(1500));
    }

    #[test]
    fn rejects_nonsense_with_a_hint() {
        let e = PlanDuration::parse("10 parsecs").unwrap_err();
        assert!(e.contains("unknown unit `parsecs`"), "{e}");
        assert!(PlanDuration::parse("m").is_err());
        assert!(PlanDuration::parse("").is_err());
    }

    /// Huge values used to panic in `Duration::from_secs_f64` or in the sum of the parts.
    #[test]
    fn huge_durations_are_refused_without_panicking() {
        for text in [
            "99999999999999999999",
            "99999999999999999999s",
            "18446744073709551615",
            "366d",
            "200d200d",
            "1e300",
            "100000000000000000000000000000000000000000h",
        ] {
            let e = PlanDuration::parse(text).unwrap_err();
            assert!(
                e.contains("is too long a duration") || e.contains("not a duration"),
                "{text}: {e}"
            );
        }
        assert_eq!(PlanDuration::parse("365d").unwrap(), PlanDuration::MAX);
        assert!(PlanDuration::from_secs_f64(f64::INFINITY).is_err());
        assert!(PlanDuration::from_secs_f64(f64::NAN).is_err());
        assert!(PlanDuration::from_secs_f64(-1.0).is_err());
        assert!(PlanDuration::from_secs_f64(1e300).is_err());
    }

    #[test]
    fn displays_round_trip() {
        for s in ["1h30m", "2m", "45s", "250ms", "0s", "30d", "1d2h3m4s"] {
            let d = PlanDuration::parse(s).unwrap();
            assert_eq!(d.to_string(), s);
            assert_eq!(PlanDuration::parse(&d.to_string()).unwrap(), d);
        }
    }
}
