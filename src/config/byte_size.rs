//! Sizes written in the config: a number of bytes, or a number with a unit.

use std::fmt;

use serde::Deserialize;

/// A size in bytes: a whole number of bytes (`67108864`), or a number with a unit
/// (`"64MiB"`, `"512 KiB"`, `"1GB"`; KiB/MiB/GiB are powers of 1024, kB/MB/GB of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `"64MiB"`, `"64 MiB"`, `"100kB"`, `"1024"`, `"1024B"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit = unit.trim();
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?}; write a number of bytes or e.g. \"64MiB\" (B, kB, MB, GB, KiB, MiB, GiB)"
                ));
            }
        };
        let not_a_size =
            || format!("{text:?} is not a size; write e.g. \"64MiB\" or a number of bytes");
        let bytes = if let Ok(whole) = number.parse::<u64>() {
            whole.checked_mul(multiplier)
        } else {
            let value = number.parse::<f64>().map_err(|_| not_a_size())?;
            let bytes = (value * multiplier as f64).round();
            // Checked before the conversion: nothing near u64::MAX is a sensible size.
            (0.0..1e18).contains(&bytes).then_some(bytes as u64)
        };
        bytes
            .map(Self)
            .ok_or_else(|| format!("{text:?} is too large; write at most a few GiB"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{} {unit}", self.0 / size);
            }
        }
        for (size, unit) in UNITS {
            if self.0 >= size {
                return write!(f, "{:.1} {unit}", self.0 as f64 / size as f64);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("write a number of bytes or a size such as \"64MiB\"")
        })? {
            Raw::Bytes(bytes) => Ok(Self(bytes)),
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn a_size_is_a_number_of_bytes_or_a_number_with_a_unit() {
        for (text, bytes) in [
            ("67108864", 64 << 20),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("1.5GiB", 3 << 29),
            ("100kB", 100_000),
            ("2MB", 2_000_000),
            ("512B", 512),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
        for text in [
            "",
            "MiB",
            "64 parsecs",
            "-1MiB",
            "99999999999999999999GiB",
            "1e400",
        ] {
            assert!(ByteSize::parse(text).is_err(), "{text}");
        }
        assert_eq!(ByteSize(64 << 20).to_string(), "64 MiB");
        assert_eq!(ByteSize(1_500_000).to_string(), "1.4 MiB");
        assert_eq!(ByteSize(100).to_string(), "100 bytes");
    }
}
