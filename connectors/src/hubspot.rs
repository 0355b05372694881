//! Placeholder: the hubspot connector is being written.
use crate::*;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubspotConfig {}

impl HubspotConfig {
    pub fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        Vec::new()
    }

    pub fn validate(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

pub struct HubspotConnector;

impl HubspotConnector {
    pub fn new(_name: &str, _config: &HubspotConfig) -> Result<Self, String> {
        Err("not built yet".to_owned())
    }
}

#[async_trait]
impl Connector for HubspotConnector {
    fn kind(&self) -> &'static str {
        "hubspot"
    }

    async fn deliver(&self, _delivery: Delivery<'_>) -> Attempt {
        Attempt::permanent("not built yet")
    }
}
