//! The config file: `$XDG_CONFIG_HOME/launcherctl/config.toml` (else `~/.config/...`), holding the
//! gateway URL, the token stored by `login` and a CA file. It holds a credential, so it is
//! written with mode 0600 in a 0700 directory.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CtlError;

/// What the config file may hold; every key is optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    /// Gateway URL (`http(s)://host:port` or `unix:/path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// PEM file of CA certificates to trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The default config path from `XDG_CONFIG_HOME` or `HOME` (`get` reads the environment).
pub fn default_path(get: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    // The XDG spec says relative values are to be ignored.
    let base = get("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            get("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".config"))
        })?;
    Some(base.join("launcherctl").join("config.toml"))
}

/// Reads the config file; a missing file is an empty config.
pub fn load(path: &Path) -> Result<FileConfig, CtlError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(e) => {
            return Err(CtlError::Usage(format!(
                "cannot read the config file {}: {e}",
                path.display()
            )))
        }
    };
    toml::from_str(&text).map_err(|e| {
        CtlError::Usage(format!(
            "the config file {} is not valid: {}; keys are url, token, ca-file",
            path.display(),
            e.message()
        ))
    })
}

/// Writes the config file with mode 0600 (its directory 0700), replacing it atomically.
pub fn save(path: &Path, cfg: &FileConfig) -> Result<(), CtlError> {
    let fail =
        |what: &str, e: std::io::Error| CtlError::Other(format!("cannot {what} {}: {e}", path.display()));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("create the directory of", e))?;
    let text = toml::to_string(cfg).map_err(|e| CtlError::Other(format!("cannot encode the config: {e}")))?;
    let tmp = path.with_extension(format!("toml.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An existing temp file keeps its old mode through open(); set it explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail("write the config file", e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_from_xdg_or_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(
            default_path(env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])),
            Some(PathBuf::from("/x/launcherctl/config.toml"))
        );
        assert_eq!(
            default_path(env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.config/launcherctl/config.toml"))
        );
        assert_eq!(default_path(env(&[])), None);
    }

    #[test]
    fn save_and_load_round_trip_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/config.toml");
        assert_eq!(load(&path).unwrap(), FileConfig::default());
        let cfg = FileConfig {
            url: Some("https://gw:5559".into()),
            token: Some("alice|1|ff".into()),
            ca_file: Some("/etc/ca.pem".into()),
        };
        save(&path, &cfg).unwrap();
        assert_eq!(load(&path).unwrap(), cfg);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("ca-file = "), "{text}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "urll = \"x\"\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("urll") && err.contains("keys are url"), "{err}");
    }
}
