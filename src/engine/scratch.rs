//! The scratch folder: each stage's fresh working folder and the process-group markers of
//! the workers running. It is made and removed once per stage, and it must outlive a crash
//! of jarvis (the next start reads the markers to kill leftover workers) but not a reboot
//! (the workers die with the machine). That is what a tmpfs gives: on ext4 the folder,
//! FIFO and marker of a stage cost about half a millisecond of inode allocation, on tmpfs
//! a tenth of that; and what workers leave there (keys, state) never reaches a disk.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

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
        let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.into());
        let dir = shm.join(shm_name(&data_dir));
        match private_folder(&dir) {
            Ok(()) => {
                claim(&dir, &data_dir);
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

/// The file in a scratch folder in /dev/shm that names the data folder it serves; whoever
/// uses the folder holds a shared lock on it.
const OWNER_FILE: &str = "data_dir";

/// The owner files of the scratch folders this process uses, each under a shared lock until
/// [`tidy`], so that another jarvis's sweep never takes a folder in use, whatever it can see
/// of this one's data folder (another mount namespace, a path it may not read).
static CLAIMED: Mutex<Vec<(PathBuf, Flock<File>)>> = Mutex::new(Vec::new());

/// Names `data_dir` in the scratch folder `dir` and holds it for this process.
fn claim(dir: &Path, data_dir: &Path) {
    let path = dir.join(OWNER_FILE);
    let Ok(mut claimed) = CLAIMED.lock() else {
        return;
    };
    if claimed.iter().any(|(p, _)| *p == path) {
        return;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .and_then(|mut f| {
            use std::io::Write;
            f.set_len(0)?;
            f.write_all(data_dir.as_os_str().as_encoded_bytes())?;
            Ok(f)
        });
    match file.map(|f| Flock::lock(f, FlockArg::LockShared)) {
        Ok(Ok(lock)) => claimed.push((path, lock)),
        Ok(Err((_, e))) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot lock the scratch folder's owner file");
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot name the data folder in the scratch folder");
        }
    }
}

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
        if !ours || path == mine || already_private(&path).is_err() {
            continue;
        }
        let Ok(owner_file) = File::open(path.join(OWNER_FILE)) else {
            continue;
        };
        // Held while deciding and removing; held shared by a jarvis that uses the folder.
        let Ok(mut owner_file) = Flock::lock(owner_file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        let mut owner = Vec::new();
        if std::io::Read::read_to_end(&mut *owner_file, &mut owner).is_err() {
            continue;
        }
        let owner =
            PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(owner));
        let running = std::fs::read_dir(running_dir(&path))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        // Only a data folder known to be gone: one this process may not look into stays.
        if owner.is_absolute() && matches!(owner.try_exists(), Ok(false)) && !running {
            tracing::debug!(folder = %path.display(), "removing the scratch folder of a data folder that is gone");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// One name per user and (canonical) data folder, so that several jarvis on one machine (a
/// cluster's nodes, tests) never share markers.
fn shm_name(data_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = ring::digest::digest(&ring::digest::SHA256, data_dir.as_os_str().as_bytes());
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
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => already_private(dir),
        Err(e) => Err(e),
    }
}

/// Whether an existing `dir` is a folder of ours that no one else may enter.
fn already_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
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
        let owner_file = scratch.join(OWNER_FILE);
        if let Ok(mut claimed) = CLAIMED.lock() {
            claimed.retain(|(p, _)| *p != owner_file);
        }
        let _ = std::fs::remove_file(owner_file);
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
        // In use by a jarvis that names a data folder this one cannot see.
        let in_use = folder("jarvis-0-9999", None);
        claim(&in_use, Path::new("/nonexistent/elsewhere"));

        sweep_orphans(root.path(), &mine);

        if let Ok(mut claimed) = CLAIMED.lock() {
            claimed.retain(|(p, _)| !p.starts_with(&in_use));
        }
        assert!(in_use.exists(), "its owner file is locked: in use");

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
