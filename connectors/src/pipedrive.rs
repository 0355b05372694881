//! Placeholder: the pipedrive connector is being written.
use crate::*;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipedriveConfig {}

impl PipedriveConfig {
    pub fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        Vec::new()
    }

    pub fn validate(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

pub struct PipedriveConnector;

impl PipedriveConnector {
    pub fn new(_name: &str, _config: &PipedriveConfig) -> Result<Self, String> {
        Err("not built yet".to_owned())
    }
}

#[async_trait]
impl Connector for PipedriveConnector {
    fn kind(&self) -> &'static str {
        "pipedrive"
    }

    async fn deliver(&self, _delivery: Delivery<'_>) -> Attempt {
        Attempt::permanent("not built yet")
    }
}
