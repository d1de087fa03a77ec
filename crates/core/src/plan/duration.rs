//! Durations as people write them in plans: `90`, `90s`, `2m`, `1h30m`, `120 minutes`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in a plan. Integers are seconds; strings are a sum of `<n><unit>` parts with
/// units `ms`, `s`, `m`, `h`, `d` (and their long forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanDuration(pub Duration);

impl PlanDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty duration".into());
        }
        if let Ok(secs) = t.parse::<u64>() {
            return Ok(PlanDuration(Duration::from_secs(secs)));
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
            total += Duration::from_secs_f64(number * secs);
            rest = &rest[unit_len..];
        }
        Ok(PlanDuration(total))
    }
}

impl fmt::Display for PlanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ms = d.subsec_millis();
        let mut s = d.as_secs();
        if s == 0 && ms > 0 {
            return write!(f, "{ms}ms");
        }
        let h = s / 3600;
        s %= 3600;
        let m = s / 60;
        s %= 60;
        let mut out = String::new();
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
                Ok(PlanDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PlanDuration, E> {
                u64::try_from(v)
                    .map(|v| PlanDuration(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PlanDuration, E> {
                if v < 0.0 || !v.is_finite() {
                    return Err(E::custom("a duration must be a positive number of seconds"));
                }
                Ok(PlanDuration(Duration::from_secs_f64(v)))
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

    #[test]
    fn displays_round_trip() {
        for s in ["1h30m", "2m", "45s", "250ms", "0s"] {
            let d = PlanDuration::parse(s).unwrap();
            assert_eq!(d.to_string(), s);
            assert_eq!(PlanDuration::parse(&d.to_string()).unwrap(), d);
        }
    }
}
