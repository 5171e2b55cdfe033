//! [`ByteSize`]: a size in bytes written as an integer (`32768`) or with a unit
//! (`"256KiB"`, `"1 MiB"`, `"64kB"`), read by the `bytesize` crate.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes. In a config file: an integer, or a string: a number (a fraction such
/// as `"1.5MiB"` is rounded down to whole bytes) and a unit of the `bytesize` crate, in
/// any case: `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024) or `kB`, `MB`, `GB`, `TB`
/// (powers of 1000). A bare `K`, `M` or `G` means KiB, MiB or GiB (bytesize would read
/// it as kB, MB or GB; this file always read it as binary); other one-letter units are
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub usize);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> usize {
        self.0
    }

    /// Parses `"256KiB"`, `"1 MiB"`, `"64kB"`, `"512"` (bytes).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        if number.parse::<f64>().is_err() {
            return Err(format!(
                "invalid size {text:?}: expected a number with an optional unit, like \"256KiB\""
            ));
        }
        let unknown = |unit: &str| {
            format!(
                "invalid size {text:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, kB, MB or GB)"
            )
        };
        let unit = match unit.trim() {
            "" => "B",
            "K" | "k" => "KiB",
            "M" => "MiB",
            "G" => "GiB",
            one if one.chars().count() == 1 && !one.eq_ignore_ascii_case("b") => {
                return Err(unknown(one))
            }
            other => other,
        };
        if unit.parse::<bytesize::Unit>().is_err() {
            return Err(unknown(unit));
        }
        let size: bytesize::ByteSize = format!("{number} {unit}")
            .parse()
            .map_err(|e| format!("invalid size {text:?}: {e}"))?;
        // bytesize saturates at u64::MAX: that is "too large", as is what a usize cannot hold.
        match size.as_u64() {
            u64::MAX => None,
            n => usize::try_from(n).ok(),
        }
        .map(ByteSize)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1usize << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: an integer number of bytes or a string like \"256KiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                usize::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("size too large"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                usize::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        let cases = [
            ("512", 512),
            ("512B", 512),
            ("512 b", 512),
            ("32KiB", 32 * 1024),
            ("256 KiB", 256 * 1024),
            ("1MiB", 1 << 20),
            ("1mib", 1 << 20),
            ("2GiB", 2 << 30),
            ("64kB", 64_000),
            ("64KB", 64_000),
            ("1MB", 1_000_000),
            ("1.5MiB", 3 << 19),
            // A bare K, M, G is binary, as this file always read it.
            ("64K", 64 * 1024),
            ("64k", 64 * 1024),
            ("2M", 2 << 20),
            ("1G", 1 << 30),
        ];
        for (text, bytes) in cases {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_refused_saying_why() {
        let expected = "expected a number with an optional unit, like \"256KiB\"";
        let unknown = "(use B, KiB, MiB, GiB, kB, MB or GB)";
        let cases = [
            ("", expected),
            ("KiB", expected),
            ("-1", expected),
            ("1.2.3KiB", expected),
            ("12 parsecs", unknown),
            ("12 m", unknown),
            ("3T", unknown),
            ("99999999999999999999", "too large"),
            ("99999999999EiB", "too large"),
        ];
        for (text, reason) in cases {
            let e = ByteSize::parse(text).expect_err(text);
            assert!(e.starts_with(&format!("invalid size {text:?}: ")), "{e}");
            assert!(e.contains(reason), "{text}: {e}");
        }
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(256 * 1024).to_string(), "256KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(ByteSize(3 << 20).to_string(), "3MiB");
    }
}
