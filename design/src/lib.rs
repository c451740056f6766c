//! Designs (SPEC 3). A stand-in for the loaders being written in parallel: the designs
//! folder only.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

pub type Document = Map<String, Value>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesignsConfig {
    pub folder: Option<PathBuf>,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

impl Default for DesignsConfig {
    fn default() -> Self {
        DesignsConfig {
            folder: None,
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_max_bytes() -> usize {
    256 * 1024
}

#[derive(Debug, Clone)]
pub struct Design {
    pub reference: String,
    pub hostname: String,
    pub provider: String,
    pub pipeline: Option<String>,
    pub document: Document,
}

#[derive(Debug, thiserror::Error)]
pub enum DesignError {
    #[error("{0}")]
    Reference(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct DesignSources {
    config: DesignsConfig,
}

impl DesignSources {
    pub fn new(config: DesignsConfig) -> Self {
        DesignSources { config }
    }

    pub async fn load(&self, reference: &str) -> Result<Design, DesignError> {
        let name = reference.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(DesignError::Reference(format!(
                "'{}' is not a design reference",
                name.escape_default()
            )));
        }
        let Some(folder) = &self.config.folder else {
            return Err(DesignError::NotFound(
                "no designs folder is configured".into(),
            ));
        };
        let text = tokio::fs::read_to_string(folder.join(format!("{name}.yaml")))
            .await
            .map_err(|_| DesignError::NotFound(format!("no design named '{name}'")))?;
        parse(name, &text, self.config.max_bytes)
    }
}

pub fn parse(reference: &str, text: &str, max_bytes: usize) -> Result<Design, DesignError> {
    if text.len() > max_bytes {
        return Err(DesignError::Invalid(format!(
            "design is over {max_bytes} bytes"
        )));
    }
    let document: Document = serde_saphyr::from_str(text)
        .map_err(|e| DesignError::Invalid(format!("design is not a YAML mapping: {e}")))?;
    let instance = document
        .get("instance")
        .and_then(Value::as_object)
        .ok_or_else(|| DesignError::Invalid("design has no 'instance' mapping".into()))?;
    let field = |key: &str| {
        instance
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| DesignError::Invalid(format!("instance.{key} is missing or not text")))
    };
    Ok(Design {
        reference: reference.to_string(),
        hostname: field("hostname")?,
        provider: field("provider")?,
        pipeline: document
            .get("pipeline")
            .and_then(Value::as_str)
            .map(str::to_string),
        document: document.clone(),
    })
}
