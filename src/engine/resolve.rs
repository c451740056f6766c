//! Which program answers for a module: the configured worker folders first, then the
//! built-in workers; and check-config's check that every stage has one. A folder or program
//! that someone else could change is refused: whoever can write it runs code as jarvis,
//! with the module's credentials and the run's secrets in its environment.

use super::*;

use std::os::unix::fs::MetadataExt;

/// Why `path` (a worker folder or program, described by `what`) is not jarvis's alone to
/// change: group- or world-writable, or owned by a user other than jarvis's or root.
fn open_to_others(what: &str, path: &std::path::Path, meta: &std::fs::Metadata) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    let shown = path.display();
    if mode & 0o022 != 0 {
        return Some(format!(
            "{what} {shown} is writable by others (mode {mode:o}); say 'chmod go-w {shown}'"
        ));
    }
    let owner = meta.uid();
    if owner != 0 && owner != nix::unistd::geteuid().as_raw() {
        return Some(format!(
            "{what} {shown} belongs to another user (uid {owner}, mode {mode:o}); make it root's or jarvis's"
        ));
    }
    None
}

/// Every configured worker folder that exists, and every program in it, that others could
/// change (for `check-config` and a start).
pub fn check_folders(config: &EngineConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for folder in &config.worker_folders {
        let Ok(meta) = std::fs::metadata(folder) else {
            continue;
        };
        if let Some(p) = open_to_others("worker folder", folder, &meta) {
            problems.push(p);
        }
        let Ok(entries) = std::fs::read_dir(folder) else {
            continue;
        };
        let mut programs: Vec<(PathBuf, std::fs::Metadata)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter_map(|path| std::fs::metadata(&path).ok().map(|m| (path, m)))
            .filter(|(_, m)| m.is_file() && m.mode() & 0o111 != 0)
            .collect();
        programs.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, meta) in programs {
            if let Some(p) = open_to_others("worker program", &path, &meta) {
                problems.push(p);
            }
        }
    }
    problems
}

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
            // Checked at every use, not only at the start: a folder opened up later must not
            // lend a module's credentials to whoever wrote into it.
            if let Some(problem) = std::fs::metadata(folder)
                .ok()
                .and_then(|m| open_to_others("worker folder", folder, &m))
                .or_else(|| open_to_others("worker program", &path, &meta))
            {
                return Err(problem);
            }
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

/// Every stage's module must resolve to a worker under `config`, and no worker folder or
/// program may be open to others; returns what is wrong (for `check-config`).
pub fn check_workers(
    config: &EngineConfig,
    pipelines: &BTreeMap<String, pipeline::PipelineConfig>,
) -> Vec<String> {
    let folders = check_folders(config);
    let mut problems: Vec<String> = folders
        .iter()
        .map(|p| format!("workers.folders: {p}"))
        .collect();
    for (name, p) in pipelines {
        for (list, stages) in [("stages", &p.stages), ("on_failure", &p.on_failure)] {
            for (i, s) in stages.iter().enumerate() {
                let (module, _) = s.module_task();
                // A folder or program open to others is said once, above.
                if let Err(e) = worker_exists(config, module)
                    && !folders.contains(&e)
                {
                    problems.push(format!("pipelines.{name}.{list}[{i}].task: {e}"));
                }
            }
        }
    }
    problems
}
