//! The scratch folder: each stage's fresh working folder and the process-group markers of
//! the workers running. It is made and removed once per stage, and it must outlive a crash
//! of jarvis (the next start reads the markers to kill leftover workers) but not a reboot
//! (the workers die with the machine). That is what a tmpfs gives: on ext4 the folder,
//! FIFO and marker of a stage cost about half a millisecond of inode allocation, on tmpfs
//! a tenth of that; and what workers leave there (keys, state) never reaches a disk.

use std::path::{Path, PathBuf};

/// The scratch root: `configured` (`scratch_dir`), else the runtime directory systemd gives
/// the unit (`RuntimeDirectory=`), else a private folder of this data folder's in
/// `/dev/shm`, else the data folder itself.
pub fn choose(data_dir: &Path, configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|d| d.is_absolute())
    {
        return dir;
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let dir = shm.join(shm_name(data_dir));
        match private_folder(&dir) {
            Ok(()) => {
                let owner = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.into());
                let _ = std::fs::write(dir.join(OWNER_FILE), owner.as_os_str().as_encoded_bytes());
                sweep_orphans(shm, &dir);
                return dir;
            }
            Err(e) => {
                tracing::warn!(folder = %dir.display(), error = %e, "cannot use a scratch folder in /dev/shm; the data folder holds the working folders");
            }
        }
    }
    data_dir.to_path_buf()
}

/// The file in a scratch folder in /dev/shm that names the data folder it serves.
const OWNER_FILE: &str = "data_dir";

/// Removes this user's scratch folders in `root` whose data folder is gone and that hold no
/// marker of a running worker: a data folder deleted for good (a test's, a node's that was
/// retired) would otherwise leave its scratch folder in memory until the next reboot.
/// A folder without an owner file, or another user's, is left as it is.
fn sweep_orphans(root: &Path, mine: &Path) {
    let Some(prefix) = mine
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('-'))
        .map(|(p, _)| format!("{p}-"))
    else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix));
        if !ours || path == mine || private_folder(&path).is_err() {
            continue;
        }
        let Ok(owner) = std::fs::read(path.join(OWNER_FILE)) else {
            continue;
        };
        let owner =
            PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(owner));
        let running = std::fs::read_dir(running_dir(&path))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if owner.is_absolute() && !owner.exists() && !running {
            tracing::debug!(folder = %path.display(), "removing the scratch folder of a data folder that is gone");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// One name per user and data folder, so that several jarvis on one machine (a cluster's
/// nodes, tests) never share markers.
fn shm_name(data_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_os_str().as_bytes());
    let short: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("jarvis-{}-{short}", nix::unistd::geteuid())
}

/// Makes `dir` (mode 0700), or accepts it when it is already a folder of ours that no one
/// else may enter: in a world-writable /dev/shm another user could have made it first, or
/// left a symlink there.
fn private_folder(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("it exists and is no folder"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(std::io::Error::other("it belongs to another user"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::other("others may enter it"));
    }
    Ok(())
}

/// After a stop with no worker left: what is left of the scratch folder goes. The folder
/// itself goes only when jarvis made it in /dev/shm (a configured one or systemd's stays).
pub fn tidy(scratch: &Path) {
    let _ = std::fs::remove_dir_all(work_root(scratch));
    // Not when a marker is left: the next start needs it.
    let _ = std::fs::remove_dir(running_dir(scratch));
    if scratch.starts_with("/dev/shm") && !running_dir(scratch).exists() {
        let _ = std::fs::remove_file(scratch.join(OWNER_FILE));
        let _ = std::fs::remove_dir(scratch);
    }
}

/// Where the stages' working folders are made.
pub fn work_root(scratch: &Path) -> PathBuf {
    scratch.join("work")
}

/// Where the markers of running workers are.
pub fn running_dir(scratch: &Path) -> PathBuf {
    scratch.join("running")
}

/// The marker that records a run's worker process group while it runs.
pub fn running_marker(scratch: &Path, run: i64) -> PathBuf {
    running_dir(scratch).join(format!("{run}.pgid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_folder_wins_and_each_data_folder_gets_its_own() {
        let here = Path::new("/var/lib/jarvis");
        assert_eq!(
            choose(here, Some(Path::new("/run/jarvis"))),
            PathBuf::from("/run/jarvis")
        );
        assert_ne!(shm_name(Path::new("/a")), shm_name(Path::new("/b")));
        assert_eq!(shm_name(Path::new("/a")), shm_name(Path::new("/a")));
    }

    #[test]
    fn scratch_folders_of_gone_data_folders_are_swept_and_no_other() {
        let root = tempfile::tempdir().expect("a temp dir");
        let data = tempfile::tempdir().expect("a data folder");
        let folder = |name: &str, owner: Option<&Path>| {
            let dir = root.path().join(name);
            private_folder(&dir).expect("a scratch folder");
            if let Some(owner) = owner {
                std::fs::write(dir.join(OWNER_FILE), owner.to_string_lossy().as_bytes())
                    .expect("owner file");
            }
            dir
        };
        let mine = folder("jarvis-0-aaaa", Some(data.path()));
        let gone = folder("jarvis-0-bbbb", Some(Path::new("/nonexistent/jarvis-data")));
        let alive = folder("jarvis-0-cccc", Some(data.path()));
        let unknown = folder("jarvis-0-dddd", None);
        let busy = folder("jarvis-0-eeee", Some(Path::new("/nonexistent/other")));
        std::fs::create_dir(running_dir(&busy)).expect("running");
        std::fs::write(running_marker(&busy, 7), "123").expect("marker");
        let stranger = folder("jarvis-1-ffff", Some(Path::new("/nonexistent/x")));

        sweep_orphans(root.path(), &mine);

        assert!(mine.exists() && alive.exists() && unknown.exists());
        assert!(!gone.exists(), "its data folder is gone and nothing runs");
        assert!(
            busy.exists(),
            "a marker is left: the next start of it needs it"
        );
        assert!(stranger.exists(), "another user's");
    }

    #[test]
    fn a_folder_others_may_enter_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("a temp dir");
        let mine = tmp.path().join("mine");
        assert!(private_folder(&mine).is_ok());
        assert!(private_folder(&mine).is_ok(), "made before by us: fine");
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).expect("a folder");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(private_folder(&open).is_err());
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&mine, &link).expect("a symlink");
        assert!(private_folder(&link).is_err());
    }
}
