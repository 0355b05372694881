//! A string that must never be printed: API keys, tokens, passwords, webhook secrets.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// Prints `**REDACTED**` in both `Debug` and `Display`; the value is reached only
/// through [`Secret::expose`], so every use of it is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_redacted_in_debug_and_display() {
        let secret = Secret::new("whsec_c2VjcmV0");
        assert_eq!(format!("{secret:?}"), "**REDACTED**");
        assert_eq!(format!("{secret}"), "**REDACTED**");
        assert_eq!(secret.expose(), "whsec_c2VjcmV0");
    }
}
