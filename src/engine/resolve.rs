//! Which program answers for a module: the configured worker folders first, then the
//! built-in workers; and check-config's check that every stage has one.

use super::*;

/// Finds the program for `MODULE`: the configured folders first, then the built-in workers.
pub fn resolve_worker(
    config: &EngineConfig,
    module: &str,
    task: &str,
) -> Result<(PathBuf, Vec<String>), String> {
    use std::os::unix::fs::PermissionsExt;
    for folder in &config.worker_folders {
        let path = folder.join(module);
        if let Ok(meta) = std::fs::metadata(&path) {
            if !meta.is_file() {
                return Err(format!(
                    "worker {module} in {} is not a file",
                    folder.display()
                ));
            }
            if meta.permissions().mode() & 0o111 == 0 {
                return Err(format!(
                    "worker {module} in {} is not executable",
                    folder.display()
                ));
            }
            return Ok((path, vec![task.to_string()]));
        }
    }
    if let Some(builtin) = &config.builtin
        && builtin.modules.iter().any(|m| m == module)
    {
        return Ok((
            builtin.exe.clone(),
            vec!["worker".into(), module.into(), task.into()],
        ));
    }
    Err(format!(
        "no worker named '{module}' in the worker folders{}",
        if config.builtin.is_some() {
            " or among the built-in ones"
        } else {
            ""
        }
    ))
}

/// Whether a module resolves to some worker (for `check-config`).
pub fn worker_exists(config: &EngineConfig, module: &str) -> Result<(), String> {
    resolve_worker(config, module, "check").map(|_| ())
}

/// Every stage's module must resolve to a worker under `config`; returns what does not (for
/// `check-config`).
pub fn check_workers(
    config: &EngineConfig,
    pipelines: &BTreeMap<String, pipeline::PipelineConfig>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, p) in pipelines {
        for (list, stages) in [("stages", &p.stages), ("on_failure", &p.on_failure)] {
            for (i, s) in stages.iter().enumerate() {
                let (module, _) = s.module_task();
                if let Err(e) = worker_exists(config, module) {
                    problems.push(format!("pipelines.{name}.{list}[{i}].task: {e}"));
                }
            }
        }
    }
    problems
}
