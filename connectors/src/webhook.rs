//! Placeholder: filled by the webhook work.
use crate::*;
#[derive(Debug, Clone, serde::Deserialize)]
pub struct WebhookConfig { pub url: String, pub secret: Option<Secret>, pub secret_file: Option<PathBuf> }
impl WebhookConfig {
    pub fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> { vec![SecretSlot { key: "secret", value: &mut self.secret, file: self.secret_file.as_ref(), required: true }] }
    pub fn validate(&self) -> Vec<ConfigProblem> { Vec::new() }
}
pub struct WebhookConnector;
impl WebhookConnector { pub fn new(_name: &str, _c: &WebhookConfig) -> Result<Self, String> { Ok(Self) } }
#[async_trait]
impl Connector for WebhookConnector { fn kind(&self) -> &'static str { "webhook" } async fn deliver(&self, _d: Delivery<'_>) -> Attempt { Attempt::permanent("todo") } }
