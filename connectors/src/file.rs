//! Placeholder: filled by the file-connector work.
use crate::*;
#[derive(Debug, Clone, serde::Deserialize)]
pub struct FileConfig { pub path: PathBuf }
impl FileConfig { pub fn validate(&self) -> Vec<ConfigProblem> { Vec::new() } }
pub struct FileConnector;
impl FileConnector { pub fn new(_c: &FileConfig) -> Self { Self } }
#[async_trait]
impl Connector for FileConnector { fn kind(&self) -> &'static str { "file" } async fn deliver(&self, _d: Delivery<'_>) -> Attempt { Attempt::permanent("todo") } }
