//! Sizes as people write them in plans: `65536`, `64MiB`, `512 KiB`, `1GB`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes written in a plan. A whole number is bytes; text is a number and a unit:
/// `B`, the binary `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024) or the decimal `KB`, `MB`, `GB`,
/// `TB` (powers of 1000). Units are read without regard to case, and `K`, `M`, `G`, `T` alone
/// are the binary ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("t", 1 << 40),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

impl ByteSize {
    /// The number of bytes.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let digits = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a size: expected a number (write e.g. 65536, 512KiB or 64MiB)"
            ));
        }
        let number: f64 = t[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is not a size: bad number `{}`", &t[..digits]))?;
        let unit = t[digits..].trim().to_ascii_lowercase();
        let Some((_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!(
                "`{text}` is not a size: unknown unit `{}` (use B, KiB, MiB, GiB, or KB, MB, GB)",
                t[digits..].trim()
            ));
        };
        let bytes = number * *scale as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(format!("`{text}` is too large a size"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size, so that the text reads back the same:
    /// `64MiB`, `1536KiB`, `1000B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, scale) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if n >= scale && n.is_multiple_of(scale) {
                return write!(f, "{}{unit}", n / scale);
            }
        }
        write!(f, "{n}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 65536, \"512KiB\" or \"64MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_units() {
        let p = |s| ByteSize::parse(s).unwrap().get();
        assert_eq!(p("65536"), 65536);
        assert_eq!(p("64MiB"), 64 << 20);
        assert_eq!(p("64 mib"), 64 << 20);
        assert_eq!(p("64M"), 64 << 20);
        assert_eq!(p("512KiB"), 512 << 10);
        assert_eq!(p("1.5GiB"), 3 << 29);
        assert_eq!(p("1GB"), 1_000_000_000);
        assert_eq!(p("10 B"), 10);
    }

    #[test]
    fn rejects_nonsense_with_a_hint() {
        let e = ByteSize::parse("64 parsecs").unwrap_err();
        assert!(e.contains("unknown unit `parsecs`"), "{e}");
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("").is_err());
        assert!(ByteSize::parse("99999999999TiB").is_err());
    }

    #[test]
    fn displays_round_trip() {
        for s in ["64MiB", "1536KiB", "1000B", "2GiB", "0B"] {
            let b = ByteSize::parse(s).unwrap();
            assert_eq!(b.to_string(), s);
            assert_eq!(ByteSize::parse(&b.to_string()).unwrap(), b);
        }
    }
}
