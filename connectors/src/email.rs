//! Placeholder: the email connector is being written.
use crate::*;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {}

impl EmailConfig {
    pub fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        Vec::new()
    }

    pub fn validate(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

pub struct EmailConnector;

impl EmailConnector {
    pub fn new(_name: &str, _config: &EmailConfig) -> Result<Self, String> {
        Err("not built yet".to_owned())
    }
}

#[async_trait]
impl Connector for EmailConnector {
    fn kind(&self) -> &'static str {
        "email"
    }

    async fn deliver(&self, _delivery: Delivery<'_>) -> Attempt {
        Attempt::permanent("not built yet")
    }
}
