//! The configuration file on disk: reading it with limits (a regular file of at most 16 MiB, never
//! blocking on a FIFO), and the atomic save (temporary file + fsync + rename + directory fsync) that
//! refuses to replace a file that does not parse.

use super::{with_context, Config};
use crate::error::{Error, ErrorKind, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

impl Config {
    /// Loads a config file. An unreadable file is [`ErrorKind::Io`] naming the path; every parse error
    /// names the path in front of the message from [`Config::from_toml_str`].
    pub fn load(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let bytes = read_config_file(path)
            .map_err(|e| Error::io(format!("cannot read config file {}: {e}", path.display())))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::parse(format!(
                "config file {}: not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ))
        })?;
        Config::from_toml_str(&text)
            .map_err(|e| with_context(e, &format!("config file {}: ", path.display())))
    }

    /// Writes the config to `path` atomically: a temporary file in the same directory is written and
    /// flushed to disk, renamed over the target, and the directory is flushed, so a crash leaves either
    /// the old file or the new one, never a torn one.
    ///
    /// If the target exists but does not parse as a valid config, nothing is written and the parse
    /// error comes back ("refusing to overwrite ..."): a file someone hand-edited into a broken state
    /// may still hold the only copy of their settings. An existing file keeps its permission bits; a
    /// symbolic link is followed and the file it points to is replaced. The target's directory must
    /// exist.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.validate()
            .map_err(|e| with_context(e, &format!("not saving {}: ", path.display())))?;
        let target = resolve_save_target(path)?;
        let existing_permissions = check_overwritable(&target, path)?;

        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let io = |what: &str, e: std::io::Error| {
            Error::io(format!(
                "cannot save config file {}: {what}: {e}",
                path.display()
            ))
        };
        if !dir.is_dir() {
            return Err(Error::io(format!(
                "cannot save config file {}: directory {} does not exist",
                path.display(),
                dir.display()
            )));
        }

        let mut builder = tempfile::Builder::new();
        builder.prefix(".sda-config-").suffix(".tmp");
        // A new file gets 0666 minus the umask on Unix, as any editor would create it (tempfile's own
        // default is 0600); on Windows the directory's inherited ACL.
        if let Some(permissions) = crate::platform::new_file_permissions() {
            builder.permissions(permissions);
        }
        let mut tmp = builder
            .tempfile_in(&dir)
            .map_err(|e| io("cannot create a temporary file beside it", e))?;
        if let Some(permissions) = existing_permissions {
            tmp.as_file()
                .set_permissions(permissions)
                .map_err(|e| io("cannot copy the existing file's permissions", e))?;
        }
        tmp.write_all(self.to_toml_string().as_bytes())
            .map_err(|e| io("write failed", e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| io("flushing to disk failed", e))?;
        // On error the temporary file is deleted when `PersistError` (which owns it) is dropped.
        tmp.persist(&target)
            .map_err(|e| io("renaming the temporary file over it failed", e.error))?;
        sync_dir(&dir).map_err(|e| {
            io(
                "the file was replaced but flushing its directory to disk failed",
                e,
            )
        })?;
        Ok(())
    }
}

/// The file `save` replaces: `path` itself, or the file a symbolic link at `path` points to (renaming
/// over the link would turn it into a regular file and detach it from its target).
fn resolve_save_target(path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).map_err(|e| {
            Error::io(format!(
                "cannot save config file {}: it is a symbolic link that cannot be followed: {e}",
                path.display()
            ))
        }),
        _ => Ok(path.to_path_buf()),
    }
}

/// Refuses when `target` exists and is not a valid config; returns the existing permissions to keep.
fn check_overwritable(target: &Path, shown: &Path) -> Result<Option<std::fs::Permissions>> {
    let metadata = match std::fs::metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::io(format!(
                "cannot save config file {}: {e}",
                shown.display()
            )))
        }
    };
    if !metadata.is_file() {
        return Err(Error::io(format!(
            "refusing to overwrite {}: it is not a regular file",
            shown.display()
        )));
    }
    let refuse = |e: Error| {
        let m = format!(
            "refusing to overwrite {}: it does not parse ({}); fix or remove it",
            shown.display(),
            e.message()
        );
        match e.kind() {
            kind @ (ErrorKind::Io | ErrorKind::InvalidValue | ErrorKind::UnknownKey) => {
                Error::new(kind, m)
            }
            _ => Error::parse(m),
        }
    };
    let bytes = read_config_file(target).map_err(|e| {
        Error::io(format!(
            "refusing to overwrite {}: cannot read it to check that it is a valid config: {e}",
            shown.display()
        ))
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| refuse(Error::parse("it is not UTF-8 text".to_owned())))?;
    Config::from_toml_str(&text).map_err(refuse)?;
    Ok(Some(metadata.permissions()))
}

/// The largest configuration file libsda reads; real ones are a few KiB.
const MAX_CONFIG_FILE_BYTES: u64 = 16 << 20;

/// Reads a configuration file, which must be a regular file of at most [`MAX_CONFIG_FILE_BYTES`]. A
/// path naming a FIFO would otherwise block the host until some writer appears (it is opened without
/// blocking and refused), and one naming a device such as `/dev/zero` would be read until memory runs
/// out.
fn read_config_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    crate::platform::open_nonblocking(&mut options);
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is larger than {} MiB, which no configuration is",
                MAX_CONFIG_FILE_BYTES >> 20
            ),
        ));
    }
    Ok(bytes)
}

/// Flushes a directory entry change (the rename) to disk, where the OS can (see
/// `platform::sync_dir`).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    crate::platform::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::dir_entries;

    #[test]
    fn save_and_load_round_trip_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sda.toml");
        let mut c = Config::default();
        c.set("hardware.device", "cpu").unwrap();
        c.set("environment.OMP_NUM_THREADS", "4").unwrap();
        c.save(&path).unwrap();
        assert_eq!(dir_entries(dir.path()), vec!["sda.toml".to_owned()]);
        assert_eq!(Config::load(&path).unwrap(), c);
        // A second save replaces the valid file, again leaving nothing else behind.
        c.set("hardware.strict", "true").unwrap();
        c.save(&path).unwrap();
        assert_eq!(dir_entries(dir.path()), vec!["sda.toml".to_owned()]);
        assert_eq!(Config::load(&path).unwrap(), c);
    }

    #[test]
    fn relative_paths_are_preserved_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sda.toml");
        let text = "[paths]\ndatasets = './d/../x'\nmodels = \"models\"\ngenerated = 'out//gen/'\n";
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.paths.datasets, "./d/../x");
        assert_eq!(c.paths.models, "models");
        assert_eq!(c.paths.generated, "out//gen/");
        c.save(&path).unwrap();
        let again = Config::load(&path).unwrap();
        assert_eq!(again.get("paths.datasets").unwrap(), "./d/../x");
        assert_eq!(again.get("paths.generated").unwrap(), "out//gen/");
        assert_eq!(again, c);
    }

    #[test]
    fn save_refuses_to_overwrite_a_malformed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sda.toml");
        for broken in [
            &b"[hardware\ndevice = 'cpu'\n"[..],
            b"[hardware]\ndevice = 'tpu'\n",
            b"[hardware]\ndevcie = 'cpu'\n",
            b"\xff\xfe not utf-8",
        ] {
            std::fs::write(&path, broken).unwrap();
            let err = Config::default().save(&path).unwrap_err();
            assert!(err.message().starts_with("refusing to overwrite"), "{err}");
            assert!(err.message().contains("fix or remove it"), "{err}");
            assert!(err.message().contains(&path.display().to_string()), "{err}");
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::Parse | ErrorKind::InvalidValue | ErrorKind::UnknownKey
                ),
                "{err:?}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), broken);
            assert_eq!(dir_entries(dir.path()), vec!["sda.toml".to_owned()]);
        }
        // An empty file is a valid (all-default) config and may be replaced.
        std::fs::write(&path, "").unwrap();
        Config::default().save(&path).unwrap();
    }

    #[test]
    fn save_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing_dir = dir.path().join("no/such/dir/sda.toml");
        let err = Config::default().save(&missing_dir).unwrap_err();
        assert!(err.kind() == ErrorKind::Io, "{err:?}");
        assert!(err.message().contains("does not exist"), "{err}");
        let err = Config::default().save(dir.path()).unwrap_err();
        assert!(err.message().contains("not a regular file"), "{err}");
    }

    // platform: POSIX modes and symlink(2) are what this test checks; Windows has neither.
    #[cfg(unix)]
    #[test]
    fn save_keeps_permissions_and_follows_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut c = Config::default();
        c.set("hardware.device", "mps").unwrap();
        c.save(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(Config::load(&real).unwrap(), c);
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            dir_entries(dir.path()),
            vec!["link.toml".to_owned(), "real.toml".to_owned()]
        );
    }

    #[test]
    fn load_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let err = Config::load(&path).unwrap_err();
        assert!(err.kind() == ErrorKind::Io, "{err:?}");
        assert!(err.message().contains("absent.toml"), "{err}");
        std::fs::write(&path, "[hardware]\nstrict = maybe\n").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.kind() == ErrorKind::Parse, "{err:?}");
        assert!(err.message().contains("absent.toml") && err.message().contains("line 2"));
    }
}
