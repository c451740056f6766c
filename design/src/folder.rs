//! Designs from the configured folder: `NAME.yaml`, never a path outside the folder, not
//! even through a symbolic link.

use std::io::ErrorKind;
use std::path::Path;

use tokio::io::AsyncReadExt;

use crate::Design;
use crate::config::DesignsConfig;
use crate::error::{DesignError, printable};
use crate::reference::is_design_name;
use crate::validate::{check_size, parse_bytes};

pub(crate) async fn load(
    config: &DesignsConfig,
    reference: &str,
    name: &str,
) -> Result<Design, DesignError> {
    let Some(folder) = &config.folder else {
        return Err(DesignError::Reference(
            "no designs folder is configured".into(),
        ));
    };
    // The reference parser already refused anything else; this guards the join below.
    if !is_design_name(name) {
        return Err(DesignError::Reference(format!(
            "'{}' is not a design name",
            printable(name)
        )));
    }
    let unreadable = |e: std::io::Error| {
        tracing::error!(folder = %folder.display(), error = %e, "the designs folder is unusable");
        DesignError::Source(format!(
            "the designs folder {} cannot be read: {}",
            printable(&folder.display().to_string()),
            e.kind()
        ))
    };
    let root = tokio::fs::canonicalize(folder).await.map_err(unreadable)?;
    let file_name = format!("{name}.yaml");
    let path = root.join(&file_name);
    let missing =
        || DesignError::NotFound(format!("there is no design '{name}' in the designs folder"));
    let real = match tokio::fs::canonicalize(&path).await {
        Ok(real) => real,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(unreadable(e)),
    };
    if !is_inside(&real, &root) {
        tracing::warn!(link = %path.display(), target = %real.display(), "design link leaves the folder");
        return Err(DesignError::Reference(format!(
            "design '{name}' is a link to outside the designs folder; refused"
        )));
    }
    let metadata = tokio::fs::metadata(&real).await.map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(DesignError::Invalid(format!(
            "design: {file_name} in the designs folder is not a regular file"
        )));
    }
    check_size(metadata.len() as usize, config.max_bytes)?;
    let file = tokio::fs::File::open(&real).await.map_err(unreadable)?;
    let mut bytes = Vec::new();
    // The file may grow between the size check and the read; never read past the limit.
    file.take(config.max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(unreadable)?;
    let mut design = parse_bytes(reference, &bytes, config.max_bytes, &config.limits)?;
    design.origin = format!("designs folder ({file_name})");
    Ok(design)
}

/// The design names of the folder: its `NAME.yaml` files with a valid name, sorted.
pub(crate) async fn names(config: &DesignsConfig) -> Result<Vec<String>, DesignError> {
    let Some(folder) = &config.folder else {
        return Err(DesignError::Reference(
            "no designs folder is configured".into(),
        ));
    };
    let unreadable = |e: std::io::Error| {
        tracing::error!(folder = %folder.display(), error = %e, "the designs folder is unusable");
        DesignError::Source(format!(
            "the designs folder {} cannot be read: {}",
            printable(&folder.display().to_string()),
            e.kind()
        ))
    };
    let mut entries = tokio::fs::read_dir(folder).await.map_err(unreadable)?;
    let mut names = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(unreadable)? {
        let file = entry.file_name();
        if let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".yaml"))
            && is_design_name(name)
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn is_inside(path: &Path, root: &Path) -> bool {
    path.parent().is_some_and(|parent| parent.starts_with(root))
}
