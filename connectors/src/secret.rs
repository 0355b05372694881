//! A string that must never be printed: API keys, tokens, passwords, webhook secrets.

use std::fmt;

use serde::de::{EnumAccess, MapAccess, SeqAccess, Visitor};
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

/// A secret is text, but a password or token made of digits (or `true`) reaches here as
/// a number or a boolean (TOML without quotes, an env value): it is taken as written. No
/// error names the value: serde's usual "invalid type: found unsigned int `1234`" would
/// print the secret.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// What went wrong, worded without the value: `found` says only its kind.
fn not_text<E: serde::de::Error>(found: &str, advice: &str) -> E {
    E::custom(format!(
        "a secret must be text, found {found} (the value is not shown); {advice}"
    ))
}

const QUOTE_IT: &str = "write it in quotes, or put it in the `_file` key's file";

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret as text")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
        Ok(Secret(value.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Secret, E> {
        Ok(Secret(value))
    }

    fn visit_char<E: serde::de::Error>(self, value: char) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_i128<E: serde::de::Error>(self, value: i128) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_u128<E: serde::de::Error>(self, value: u128) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    /// A fraction or an exponent does not survive as written (`1.50` reads back as
    /// `1.5`): refused rather than silently changed.
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(not_text(
            "a number with a fraction or an exponent, which cannot be kept exactly as written",
            QUOTE_IT,
        ))
    }

    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Err(not_text("bytes", QUOTE_IT))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Secret, E> {
        Err(not_text("nothing", QUOTE_IT))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Secret, E> {
        Err(not_text("nothing", QUOTE_IT))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(not_text("a list", QUOTE_IT))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(not_text("a table", QUOTE_IT))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(not_text("an enum", QUOTE_IT))
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

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[allow(dead_code)]
        secret: Secret,
    }

    #[test]
    fn numbers_and_booleans_are_taken_as_written_and_nothing_else_is_echoed() {
        let read = |text: &str| toml::from_str::<Holder>(text);
        assert_eq!(
            read("secret = 12345678").unwrap().secret.expose(),
            "12345678"
        );
        assert_eq!(read("secret = -42").unwrap().secret.expose(), "-42");
        assert_eq!(read("secret = true").unwrap().secret.expose(), "true");
        for text in [
            "secret = 1.2345678",
            "secret = [\"hunter2x\"]",
            "secret = { a = \"hunter2x\" }",
        ] {
            let error = read(text).unwrap_err().message().to_owned();
            assert!(
                !error.contains("hunter2x") && !error.contains("1.234"),
                "{error}"
            );
            assert!(error.contains("a secret must be text"), "{error}");
        }
    }
}
