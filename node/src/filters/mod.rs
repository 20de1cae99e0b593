//! The admin filter files `launcher-mounts`, `launcher-env` and `launcher-ports` (docs/configuration.md).
//!
//! Each file is DCF as in the product's admin guide: records separated by blank lines, one
//! `Key: value` field per line, `#` comment lines, and for `Environment` and `Ports` further values
//! on indented continuation lines. Field names are case-sensitive, values are trimmed. Every
//! record may carry the filters `JobType` (session/adhoc/any, default any), `Workbench` (default
//! any, compared case-insensitively), `Cluster` (absent: every cluster), `User` and `Group`
//! (comma-separated names; absent: everyone). The env and ports files also take the guide's
//! simple format: a record without any `Key:` line is a list of `KEY=VALUE` lines (env) or port
//! numbers (ports) that applies to every job.
//!
//! The files are read once at start-up ([`FilterFiles::load`]); a malformed file is an error that
//! names the file and the line. The leader then calls [`FilterFiles::apply`] once per submit and
//! stores the result in the job, so `apply` is a pure function of the loaded files, the job and
//! the user's groups: no clock, no file system, no iteration over hash maps.
//!
//! One clash in the guide: a `CephFs` mount has its own `User` field (the Ceph user name). In a
//! `CephFs` record `User` keeps that meaning, so such a mount cannot be filtered by user.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use launcher_storage::job::{ExposedPort, Job, Mount, MountSource, NameValue};
use serde_json::{Map, Value};

/// File name of the mounts filter in the configuration directory.
mod dcf;

use dcf::*;

pub const MOUNTS_FILE: &str = "launcher-mounts";
/// File name of the environment filter in the configuration directory.
pub const ENV_FILE: &str = "launcher-env";
/// File name of the exposed-ports filter in the configuration directory.
pub const PORTS_FILE: &str = "launcher-ports";

/// The placeholder replaced by the job's user in mount fields and environment values.
pub const USER_PLACEHOLDER: &str = "{USER}";

/// The job tag prefix that gives a job's type (`jobType:session`, `jobType:adhoc`).
pub const JOB_TYPE_TAG_PREFIX: &str = "jobType:";
/// The job tag prefix that gives a job's workbench (`workbench:rstudio`).
pub const WORKBENCH_TAG_PREFIX: &str = "workbench:";

const FILTER_KEYS: [&str; 5] = ["JobType", "Workbench", "Cluster", "User", "Group"];
/// The fields a `launcher-mounts` record may have.
pub const MOUNT_KEYS: [&str; 18] = [
    "MountType",
    "MountPath",
    "ReadOnly",
    "JobType",
    "Workbench",
    "Cluster",
    "User",
    "Group",
    "Path",
    "Host",
    "Monitors",
    "SecretFile",
    "SecretRef",
    "Endpoints",
    "SecretName",
    "ShareName",
    "ClaimName",
    "FilePath",
];
/// The fields a `launcher-env` record may have.
pub const ENV_KEYS: [&str; 6] = ["JobType", "Workbench", "Cluster", "User", "Group", "Environment"];
/// The fields a `launcher-ports` record may have.
pub const PORTS_KEYS: [&str; 6] = ["JobType", "Workbench", "Cluster", "User", "Group", "Ports"];

/// Why a filter file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The file's content is wrong at `line` (1-based).
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    /// The file exists but cannot be read.
    #[error("{}: cannot read the filter file: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FilterError {
    /// The line the problem is on, when it is about the content.
    pub fn line(&self) -> Option<usize> {
        match self {
            FilterError::Invalid { line, .. } => Some(*line),
            FilterError::Unreadable { .. } => None,
        }
    }

    fn at(file: &str, line: usize, message: impl Into<String>) -> FilterError {
        FilterError::Invalid {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

/// The `JobType` filter of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobTypeFilter {
    /// Interactive sessions (`jobType:session`).
    Session,
    /// Ad-hoc jobs (`jobType:adhoc`).
    Adhoc,
    /// Every job, including jobs without a `jobType:` tag.
    #[default]
    Any,
}

impl JobTypeFilter {
    fn parse(value: &str) -> Option<JobTypeFilter> {
        match value {
            "session" => Some(JobTypeFilter::Session),
            "adhoc" => Some(JobTypeFilter::Adhoc),
            "any" => Some(JobTypeFilter::Any),
            _ => None,
        }
    }
}

/// Which jobs a record applies to. The default matches every job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// `JobType`.
    pub job_type: JobTypeFilter,
    /// `Workbench`, lowercased; `None` is any.
    pub workbench: Option<String>,
    /// `Cluster`; `None` is every cluster.
    pub cluster: Option<String>,
    /// `User` names; empty is everyone.
    pub users: Vec<String>,
    /// `Group` names; empty is everyone.
    pub groups: Vec<String>,
}

impl Selector {
    /// Whether the record applies to `job`, whose user belongs to `groups`.
    pub fn matches(&self, job: &Job, groups: &[String]) -> bool {
        let job_type_ok = match self.job_type {
            JobTypeFilter::Any => true,
            JobTypeFilter::Session => tag_value(job, JOB_TYPE_TAG_PREFIX).as_deref() == Some("session"),
            JobTypeFilter::Adhoc => tag_value(job, JOB_TYPE_TAG_PREFIX).as_deref() == Some("adhoc"),
        };
        let workbench_ok = match &self.workbench {
            None => true,
            Some(w) => tag_value(job, WORKBENCH_TAG_PREFIX).as_deref() == Some(w.as_str()),
        };
        let cluster_ok = self.cluster.as_ref().is_none_or(|c| *c == job.cluster);
        let user_ok = self.users.is_empty()
            || job
                .user
                .as_ref()
                .is_some_and(|u| self.users.iter().any(|x| x == u));
        let group_ok = self.groups.is_empty() || groups.iter().any(|g| self.groups.contains(g));
        job_type_ok && workbench_ok && cluster_ok && user_ok && group_ok
    }
}

/// The value of the job's first tag with `prefix`, lowercased.
fn tag_value(job: &Job, prefix: &str) -> Option<String> {
    job.tags
        .iter()
        .find_map(|t| t.strip_prefix(prefix))
        .map(|v| v.trim().to_lowercase())
}

/// The `MountType` of a mount record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Host,
    Nfs,
    CephFs,
    GlusterFs,
    AzureFile,
    KubernetesPersistentVolumeClaim,
    Passthrough,
}

impl MountKind {
    const ALL: [MountKind; 7] = [
        MountKind::Host,
        MountKind::Nfs,
        MountKind::CephFs,
        MountKind::GlusterFs,
        MountKind::AzureFile,
        MountKind::KubernetesPersistentVolumeClaim,
        MountKind::Passthrough,
    ];

    /// The name the admin guide uses (`NFS`, `CephFs`, ...).
    pub fn name(self) -> &'static str {
        match self {
            MountKind::Host => "Host",
            MountKind::Nfs => "NFS",
            MountKind::CephFs => "CephFs",
            MountKind::GlusterFs => "GlusterFs",
            MountKind::AzureFile => "AzureFile",
            MountKind::KubernetesPersistentVolumeClaim => "KubernetesPersistentVolumeClaim",
            MountKind::Passthrough => "Passthrough",
        }
    }

    /// The `mountSource.type` of the job's mount: the name lowercased.
    pub fn wire(self) -> &'static str {
        match self {
            MountKind::Host => "host",
            MountKind::Nfs => "nfs",
            MountKind::CephFs => "cephfs",
            MountKind::GlusterFs => "glusterfs",
            MountKind::AzureFile => "azurefile",
            MountKind::KubernetesPersistentVolumeClaim => "kubernetespersistentvolumeclaim",
            MountKind::Passthrough => "passthrough",
        }
    }

    /// The type's own fields, in the order they appear in `mountSource.source`.
    fn fields(self) -> &'static [&'static str] {
        match self {
            MountKind::Host => &["Path"],
            MountKind::Nfs => &["Host", "Path"],
            MountKind::CephFs => &["Monitors", "Path", "User", "SecretFile", "SecretRef"],
            MountKind::GlusterFs => &["Endpoints", "Path"],
            MountKind::AzureFile => &["SecretName", "ShareName"],
            MountKind::KubernetesPersistentVolumeClaim => &["ClaimName"],
            MountKind::Passthrough => &["FilePath"],
        }
    }

    /// The type's fields a record must have.
    fn required(self) -> &'static [&'static str] {
        match self {
            MountKind::Host | MountKind::Nfs => &["Path"],
            MountKind::CephFs => &["Monitors"],
            MountKind::GlusterFs => &["Endpoints", "Path"],
            MountKind::AzureFile => &["SecretName"],
            MountKind::KubernetesPersistentVolumeClaim => &["ClaimName"],
            MountKind::Passthrough => &["FilePath"],
        }
    }

    /// Parses a `MountType` value; the guide's spelling in any case is accepted.
    fn parse(value: &str) -> Option<MountKind> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(value))
    }
}

/// One record of `launcher-mounts`.
#[derive(Debug, Clone, PartialEq)]
pub struct MountEntry {
    /// Which jobs get the mount.
    pub selector: Selector,
    /// `MountType`.
    pub kind: MountKind,
    /// `MountPath`, `{USER}` not yet replaced.
    pub mount_path: String,
    /// `ReadOnly` (default false).
    pub read_only: bool,
    /// The `mountSource.source` object, `{USER}` not yet replaced; for Passthrough the file's object.
    pub source: Map<String, Value>,
    /// Line of the record's first field.
    pub line: usize,
}

impl MountEntry {
    /// The job's mount for `user` (`None` leaves `{USER}` as written).
    fn to_mount(&self, user: Option<&str>) -> Mount {
        let mut source = Value::Object(self.source.clone());
        // A Passthrough object goes to the back-end untouched, as the guide says.
        if self.kind != MountKind::Passthrough {
            substitute_value(&mut source, user);
        }
        Mount {
            mount_path: substitute(&self.mount_path, user),
            read_only: self.read_only,
            mount_source: MountSource {
                kind: self.kind.wire().to_string(),
                source,
            },
        }
    }
}

/// One record of `launcher-env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEntry {
    /// Which jobs get the variables.
    pub selector: Selector,
    /// `(name, value)` in file order, values with `{USER}` not yet replaced.
    pub vars: Vec<(String, String)>,
    /// Line of the record's first line.
    pub line: usize,
}

/// One record of `launcher-ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    /// Which jobs expose the ports.
    pub selector: Selector,
    /// Ports in file order.
    pub ports: Vec<u16>,
    /// Line of the record's first line.
    pub line: usize,
}

/// The three filter files, loaded and checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FilterFiles {
    /// `launcher-mounts` records in file order.
    pub mounts: Vec<MountEntry>,
    /// `launcher-env` records in file order.
    pub env: Vec<EnvEntry>,
    /// `launcher-ports` records in file order.
    pub ports: Vec<PortEntry>,
}

impl FilterFiles {
    /// Reads `launcher-mounts`, `launcher-env` and `launcher-ports` from `dir`. A missing file has
    /// no entries; an unreadable or malformed one is an error naming the file (and line).
    /// Passthrough mount files are read now, relative paths against `dir`.
    pub fn load(dir: &Path) -> Result<FilterFiles, FilterError> {
        let read = |name: &str| -> Result<Option<(String, String)>, FilterError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some((text, path.display().to_string()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(FilterError::Unreadable { path, source }),
            }
        };
        let mut files = FilterFiles::default();
        if let Some((text, file)) = read(MOUNTS_FILE)? {
            files.mounts = parse_mounts_in(&text, &file, Some(dir))?;
        }
        if let Some((text, file)) = read(ENV_FILE)? {
            files.env = parse_env(&text, &file)?;
        }
        if let Some((text, file)) = read(PORTS_FILE)? {
            files.ports = parse_ports(&text, &file)?;
        }
        tracing::debug!(
            dir = %dir.display(),
            mounts = files.mounts.len(),
            env = files.env.len(),
            ports = files.ports.len(),
            "loaded filter files"
        );
        Ok(files)
    }

    /// Whether no file has any entry.
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty() && self.env.is_empty() && self.ports.is_empty()
    }

    /// Applies every matching entry to `job` (whose `user` and `cluster` are set; `groups` are the
    /// user's groups, see [`groups_of`]), replacing `{USER}` with the job's user.
    ///
    /// - Mounts are appended in file order, except one whose `mountPath` the job already has.
    /// - Environment entries set variables in file order: admin policy wins, so a file entry
    ///   replaces the job's own value of the same name in place, and a later entry replaces an
    ///   earlier one; new names are appended.
    /// - Ports are appended as TCP ports, except a target port the job already exposes.
    ///
    /// Deterministic: the same files, job and groups always give the same job.
    pub fn apply(&self, job: &mut Job, groups: &[String]) {
        let user = job.user.clone();
        let user = user.as_deref();

        let mounts: Vec<Mount> = self
            .mounts
            .iter()
            .filter(|m| m.selector.matches(job, groups))
            .map(|m| m.to_mount(user))
            .collect();
        for mount in mounts {
            if !job.mounts.iter().any(|m| m.mount_path == mount.mount_path) {
                job.mounts.push(mount);
            }
        }

        let vars: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|e| e.selector.matches(job, groups))
            .flat_map(|e| e.vars.iter())
            .map(|(name, value)| (name.clone(), substitute(value, user)))
            .collect();
        for (name, value) in vars {
            match job.environment.iter_mut().find(|nv| nv.name == name) {
                Some(existing) => existing.value = value,
                None => job.environment.push(NameValue { name, value }),
            }
        }

        let ports: Vec<u16> = self
            .ports
            .iter()
            .filter(|p| p.selector.matches(job, groups))
            .flat_map(|p| p.ports.iter().copied())
            .collect();
        for port in ports {
            let target_port = u32::from(port);
            if !job.exposed_ports.iter().any(|p| p.target_port == target_port) {
                job.exposed_ports.push(ExposedPort {
                    target_port,
                    published_port: None,
                    protocol: Some("TCP".to_string()),
                });
            }
        }
    }
}

impl FilterFiles {
    /// The host directories that the `Host` records of `launcher-mounts` matching `job` would
    /// mount, `{USER}` replaced: under the mount policy a user may mount from these
    /// (docs/security.md).
    pub fn allowed_host_sources(&self, job: &Job, groups: &[String]) -> Vec<String> {
        let user = job.user.as_deref();
        self.mounts
            .iter()
            .filter(|m| m.kind == MountKind::Host && m.selector.matches(job, groups))
            .filter_map(|m| m.source.get("path").and_then(Value::as_str))
            .map(|p| substitute(p, user))
            .collect()
    }
}

/// The names of the groups `user` belongs to (primary and supplementary) from the user database,
/// sorted; empty for an unknown user. It may query NSS (LDAP, ...): call it off the async runtime.
pub fn groups_of(user: &str) -> Vec<String> {
    let Ok(Some(entry)) = nix::unistd::User::from_name(user) else {
        return Vec::new();
    };
    let gids = CString::new(user)
        .ok()
        .and_then(|name| nix::unistd::getgrouplist(&name, entry.gid).ok())
        .unwrap_or_else(|| vec![entry.gid]);
    let mut names: Vec<String> = gids
        .into_iter()
        .filter_map(|gid| nix::unistd::Group::from_gid(gid).ok().flatten())
        .map(|g| g.name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Parses the text of a `launcher-mounts` file; `file_name` is used in errors. Relative
/// Passthrough `FilePath`s are read relative to the current directory.
pub fn parse_mounts(text: &str, file_name: &str) -> Result<Vec<MountEntry>, FilterError> {
    parse_mounts_in(text, file_name, None)
}

/// Parses the text of a `launcher-env` file; `file_name` is used in errors.
pub fn parse_env(text: &str, file_name: &str) -> Result<Vec<EnvEntry>, FilterError> {
    let mut entries = Vec::new();
    for lines in records(text) {
        let line = lines[0].no;
        if is_simple(&lines) {
            let mut vars = Vec::new();
            for l in &lines {
                vars.push(env_pair(file_name, l.no, l.text.trim())?);
            }
            entries.push(EnvEntry {
                selector: Selector::default(),
                vars,
                line,
            });
            continue;
        }
        let record = read_fields(file_name, &lines, &ENV_KEYS, "Environment")?;
        let selector = selector(file_name, &record, true)?;
        let mut vars = Vec::new();
        if let Some(field) = record.get("Environment") {
            if !field.value.is_empty() {
                vars.push(env_pair(file_name, field.line, &field.value)?);
            }
            for (no, text) in &field.more {
                vars.push(env_pair(file_name, *no, text)?);
            }
        }
        entries.push(EnvEntry { selector, vars, line });
    }
    Ok(entries)
}

/// Parses the text of a `launcher-ports` file; `file_name` is used in errors.
pub fn parse_ports(text: &str, file_name: &str) -> Result<Vec<PortEntry>, FilterError> {
    let mut entries = Vec::new();
    for lines in records(text) {
        let line = lines[0].no;
        if is_simple(&lines) {
            let mut ports = Vec::new();
            for l in &lines {
                ports.push(port(file_name, l.no, l.text.trim())?);
            }
            entries.push(PortEntry {
                selector: Selector::default(),
                ports,
                line,
            });
            continue;
        }
        let record = read_fields(file_name, &lines, &PORTS_KEYS, "Ports")?;
        let selector = selector(file_name, &record, true)?;
        let mut ports = Vec::new();
        if let Some(field) = record.get("Ports") {
            if !field.value.is_empty() {
                ports.push(port(file_name, field.line, &field.value)?);
            }
            for (no, text) in &field.more {
                ports.push(port(file_name, *no, text)?);
            }
        }
        entries.push(PortEntry {
            selector,
            ports,
            line,
        });
    }
    Ok(entries)
}

fn parse_mounts_in(text: &str, file: &str, base: Option<&Path>) -> Result<Vec<MountEntry>, FilterError> {
    let mut entries = Vec::new();
    for lines in records(text) {
        let record = read_fields(file, &lines, &MOUNT_KEYS, "")?;
        let first = record.first_line;
        let type_field = record
            .get("MountType")
            .ok_or_else(|| FilterError::at(file, first, "mount is missing required field 'MountType'"))?;
        let kind = MountKind::parse(&type_field.value).ok_or_else(|| {
            let names: Vec<&str> = MountKind::ALL.iter().map(|k| k.name()).collect();
            FilterError::at(
                file,
                type_field.line,
                format!(
                    "unknown MountType '{}' (expected one of {})",
                    type_field.value,
                    names.join(", ")
                ),
            )
        })?;
        let mount_path = record
            .get("MountPath")
            .ok_or_else(|| FilterError::at(file, first, "mount is missing required field 'MountPath'"))?
            .value
            .clone();
        let read_only = match record.get("ReadOnly") {
            None => false,
            Some(f) => match f.value.as_str() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(FilterError::at(
                        file,
                        f.line,
                        format!("bad ReadOnly '{other}' (expected true or false)"),
                    ))
                }
            },
        };
        // Fields of another mount type are a mistake worth reporting, not something to ignore.
        let common = ["MountType", "MountPath", "ReadOnly"];
        for (key, field) in &record.fields {
            let is_filter =
                FILTER_KEYS.contains(&key.as_str()) && !(kind == MountKind::CephFs && key == "User");
            if !common.contains(&key.as_str()) && !is_filter && !kind.fields().contains(&key.as_str()) {
                return Err(FilterError::at(
                    file,
                    field.line,
                    format!(
                        "field '{key}' does not apply to MountType {} (its fields are: {})",
                        kind.name(),
                        kind.fields().join(", ")
                    ),
                ));
            }
        }
        for req in kind.required() {
            if record.get(req).is_none() {
                return Err(FilterError::at(
                    file,
                    first,
                    format!(
                        "mount is missing required field '{req}' (required for MountType {})",
                        kind.name()
                    ),
                ));
            }
        }
        let source = if kind == MountKind::Passthrough {
            let f = record.get("FilePath").expect("checked as required above");
            passthrough(file, f.line, &f.value, base)?
        } else {
            let mut source = Map::new();
            for key in kind.fields() {
                if let Some(f) = record.get(key) {
                    let value = if *key == "Monitors" {
                        Value::Array(
                            f.value
                                .split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(|s| Value::String(s.to_string()))
                                .collect(),
                        )
                    } else {
                        Value::String(f.value.clone())
                    };
                    source.insert(camel_case(key), value);
                }
            }
            source
        };
        entries.push(MountEntry {
            selector: selector(file, &record, kind != MountKind::CephFs)?,
            kind,
            mount_path,
            read_only,
            source,
            line: first,
        });
    }
    Ok(entries)
}

/// Largest Passthrough file read: a mount description, not a data set (and never /dev/zero).
const MAX_PASSTHROUGH_BYTES: u64 = 1024 * 1024;

/// Reads a regular file of at most [`MAX_PASSTHROUGH_BYTES`] as UTF-8.
fn read_small_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    f.take(MAX_PASSTHROUGH_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_PASSTHROUGH_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_PASSTHROUGH_BYTES} bytes"
        )));
    }
    Ok(text)
}

/// Reads a Passthrough mount's JSON object.
fn passthrough(
    file: &str,
    line: usize,
    path: &str,
    base: Option<&Path>,
) -> Result<Map<String, Value>, FilterError> {
    let full = match base {
        Some(dir) if Path::new(path).is_relative() => dir.join(path),
        _ => PathBuf::from(path),
    };
    let text = read_small_file(&full).map_err(|e| {
        FilterError::at(
            file,
            line,
            format!("Passthrough FilePath '{}' cannot be read: {e}", full.display()),
        )
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FilterError::at(
            file,
            line,
            format!(
                "Passthrough FilePath '{}' does not hold a JSON object",
                full.display()
            ),
        )),
        Err(e) => Err(FilterError::at(
            file,
            line,
            format!("Passthrough FilePath '{}' is not valid JSON: {e}", full.display()),
        )),
    }
}

/// `SecretFile` → `secretFile`.
fn camel_case(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) => c.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn substitute(text: &str, user: Option<&str>) -> String {
    match user {
        Some(u) => text.replace(USER_PLACEHOLDER, u),
        None => text.to_string(),
    }
}

fn substitute_value(value: &mut Value, user: Option<&str>) {
    match value {
        Value::String(s) => *s = substitute(s, user),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute_value(v, user)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute_value(v, user)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(user: &str, cluster: &str, tags: &[&str]) -> Job {
        Job {
            name: "j".into(),
            cluster: cluster.into(),
            user: Some(user.into()),
            command: Some("true".into()),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    fn err_text<T: std::fmt::Debug>(r: Result<T, FilterError>) -> String {
        r.unwrap_err().to_string()
    }

    fn files(mounts: &str, env: &str, ports: &str) -> FilterFiles {
        FilterFiles {
            mounts: parse_mounts(mounts, MOUNTS_FILE).unwrap(),
            env: parse_env(env, ENV_FILE).unwrap(),
            ports: parse_ports(ports, PORTS_FILE).unwrap(),
        }
    }

    const GUIDE_MOUNTS: &str = "\
# User home mount - This is REQUIRED for the session to run
MountType: NFS
Host: nfs01
Path: /home/{USER}
MountPath: /home/{USER}
ReadOnly: false

# Shared code mount
Cluster: Kubernetes
MountType: NFS
Host: nfs01
Path: /dev64
MountPath: /code
ReadOnly: false

# Only mount the following directory when the user is launching a JupyterLab session
Cluster: Kubernetes
Workbench: JupyterLab
MountType: CephFs
Monitors: mon1:6789, mon2:6789
SecretFile: /etc/secrets/ceph
User: ceph-{USER}
MountPath: /jupyter
ReadOnly: true
";

    #[test]
    fn guide_mounts_parse_and_apply_with_user_substitution() {
        let f = files(GUIDE_MOUNTS, "", "");
        assert_eq!(f.mounts.len(), 3);
        assert_eq!(f.mounts[0].line, 2);
        assert_eq!(f.mounts[2].selector.workbench.as_deref(), Some("jupyterlab"));
        assert!(
            f.mounts[2].selector.users.is_empty(),
            "CephFs User is the Ceph user"
        );

        let mut j = job("alice", "Local", &[]);
        f.apply(&mut j, &[]);
        assert_eq!(
            j.mounts,
            vec![Mount {
                mount_path: "/home/alice".into(),
                read_only: false,
                mount_source: MountSource {
                    kind: "nfs".into(),
                    source: json!({"host": "nfs01", "path": "/home/alice"}),
                },
            }]
        );

        let mut k = job("bob", "Kubernetes", &["workbench:jupyterlab"]);
        f.apply(&mut k, &[]);
        let paths: Vec<&str> = k.mounts.iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(paths, ["/home/bob", "/code", "/jupyter"]);
        assert_eq!(k.mounts[2].mount_source.kind, "cephfs");
        assert!(k.mounts[2].read_only);
        assert_eq!(
            k.mounts[2].mount_source.source,
            json!({"monitors": ["mon1:6789", "mon2:6789"], "user": "ceph-bob", "secretFile": "/etc/secrets/ceph"})
        );
    }

    #[test]
    fn every_mount_type_builds_its_source() {
        let text = "\
MountType: Host
Path: /data/{USER}
MountPath: /data

MountType: GlusterFs
Endpoints: gluster
Path: vol1
MountPath: /g

MountType: AzureFile
SecretName: az
ShareName: share
MountPath: /az

MountType: KubernetesPersistentVolumeClaim
ClaimName: claim-{USER}
MountPath: /pvc
";
        let f = files(text, "", "");
        let mut j = job("carol", "K8s", &[]);
        f.apply(&mut j, &[]);
        let got: Vec<(&str, &Value)> = j
            .mounts
            .iter()
            .map(|m| (m.mount_source.kind.as_str(), &m.mount_source.source))
            .collect();
        assert_eq!(
            got,
            vec![
                ("host", &json!({"path": "/data/carol"})),
                ("glusterfs", &json!({"endpoints": "gluster", "path": "vol1"})),
                ("azurefile", &json!({"secretName": "az", "shareName": "share"})),
                (
                    "kubernetespersistentvolumeclaim",
                    &json!({"claimName": "claim-carol"})
                ),
            ]
        );
    }

    #[test]
    fn unknown_field_names_file_line_and_choices() {
        let text = "MountType: Host\nPath: /x\nMountPath: /x\n\n# comment\nMountType: Host\nPath: /y\nMountPth: /z\n";
        let e = err_text(parse_mounts(text, "launcher-mounts"));
        assert!(
            e.starts_with(
                "launcher-mounts:8: unknown field 'MountPth' (expected one of MountType, MountPath,"
            ),
            "{e}"
        );
        let e = err_text(parse_mounts(
            "MountType: Host\nPath: /x\nmountpath: /y\n",
            "launcher-mounts",
        ));
        assert!(e.contains(":3:") && e.contains("did you mean 'MountPath'"), "{e}");
        let e = err_text(parse_env("Environment: A=1\nPorts: 1\n", "launcher-env"));
        assert!(e.starts_with("launcher-env:2: unknown field 'Ports'"), "{e}");
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        let e = err_text(parse_mounts("MountType: Host\nPath /x\nMountPath: /x\n", "m"));
        assert!(e.starts_with("m:2: expected 'Key: value'"), "{e}");
        // Mount fields never continue on indented lines.
        let e = err_text(parse_mounts(
            "MountType: Host\nPath: /x\n  /more\nMountPath: /x\n",
            "m",
        ));
        assert!(e.starts_with("m:3: unexpected indented line"), "{e}");
        // An indented line after a field that does not continue.
        let e = err_text(parse_env("JobType: adhoc\n  A=1\n", "e"));
        assert!(
            e.starts_with("e:2: unexpected indented line 'A=1': only Environment"),
            "{e}"
        );
        let e = err_text(parse_ports("Ports: 1\nCluster: x\n  2\n", "p"));
        assert!(e.starts_with("p:3:"), "{e}");
        // A KEY=VALUE line inside a record with fields.
        let e = err_text(parse_env("JobType: adhoc\nA=1\n", "e"));
        assert!(e.starts_with("e:2: expected 'Key: value'"), "{e}");
        // A mounts file has no simple format.
        let e = err_text(parse_mounts("/home/x\n", "m"));
        assert!(e.starts_with("m:1: expected 'Key: value'"), "{e}");
        let e = err_text(parse_mounts("MountType: Host\nPath:\nMountPath: /x\n", "m"));
        assert!(e.starts_with("m:2: field 'Path' has no value"), "{e}");
    }

    #[test]
    fn duplicate_fields_are_errors() {
        let e = err_text(parse_mounts(
            "MountType: Host\nPath: /x\nMountPath: /x\nPath: /y\n",
            "m",
        ));
        assert_eq!(e, "m:4: duplicate field 'Path' (first given on line 2)");
        let e = err_text(parse_ports("Ports: 1\nPorts: 2\n", "p"));
        assert!(e.starts_with("p:2: duplicate field 'Ports'"), "{e}");
    }

    #[test]
    fn required_fields_per_mount_type() {
        let cases = [
            ("Path: /x\nMountPath: /x\n", "'MountType'"),
            ("MountType: Host\nPath: /x\n", "'MountPath'"),
            (
                "MountType: Host\nMountPath: /x\n",
                "'Path' (required for MountType Host)",
            ),
            (
                "MountType: NFS\nHost: h\nMountPath: /x\n",
                "'Path' (required for MountType NFS)",
            ),
            ("MountType: CephFs\nPath: /p\nMountPath: /x\n", "'Monitors'"),
            ("MountType: GlusterFs\nPath: v\nMountPath: /x\n", "'Endpoints'"),
            (
                "MountType: GlusterFs\nEndpoints: e\nMountPath: /x\n",
                "'Path' (required for MountType GlusterFs)",
            ),
            (
                "MountType: AzureFile\nShareName: s\nMountPath: /x\n",
                "'SecretName'",
            ),
            (
                "MountType: KubernetesPersistentVolumeClaim\nMountPath: /x\n",
                "'ClaimName'",
            ),
            ("MountType: Passthrough\nMountPath: /x\n", "'FilePath'"),
        ];
        for (text, want) in cases {
            let e = err_text(parse_mounts(&format!("# c\n{text}"), "m"));
            assert!(
                e.starts_with("m:2: mount is missing required field "),
                "{text}: {e}"
            );
            assert!(e.contains(want), "{text}: {e}");
        }
        // NFS Host is optional.
        let m = parse_mounts("MountType: NFS\nPath: /p\nMountPath: /x\n", "m").unwrap();
        assert_eq!(m[0].source, *json!({"path": "/p"}).as_object().unwrap());
    }

    #[test]
    fn bad_values_are_errors() {
        let e = err_text(parse_mounts("MountType: Hosts\nPath: /x\nMountPath: /x\n", "m"));
        assert!(e.starts_with("m:1: unknown MountType 'Hosts'"), "{e}");
        let e = err_text(parse_mounts(
            "MountType: Host\nPath: /x\nMountPath: /x\nReadOnly: yes\n",
            "m",
        ));
        assert_eq!(e, "m:4: bad ReadOnly 'yes' (expected true or false)");
        let e = err_text(parse_mounts(
            "JobType: batch\nMountType: Host\nPath: /x\nMountPath: /x\n",
            "m",
        ));
        assert_eq!(e, "m:1: bad JobType 'batch' (expected session, adhoc or any)");
        let e = err_text(parse_mounts(
            "MountType: Host\nPath: /x\nMountPath: /x\nClaimName: c\n",
            "m",
        ));
        assert!(
            e.starts_with("m:4: field 'ClaimName' does not apply to MountType Host"),
            "{e}"
        );
        for bad in ["0", "65536", "-1", "http", "80 81"] {
            let e = err_text(parse_ports(&format!("Ports: 1\n  {bad}\n"), "p"));
            assert_eq!(
                e,
                format!("p:2: bad port '{bad}' (expected a number from 1 to 65535)")
            );
        }
        let e = err_text(parse_ports("22\n\n99999\n", "p"));
        assert!(e.starts_with("p:3: bad port '99999'"), "{e}");
        let e = err_text(parse_env("Environment: A=1\n  JUSTNAME\n", "e"));
        assert_eq!(e, "e:2: expected an environment entry KEY=VALUE, got 'JUSTNAME'");
        let e = err_text(parse_env("A=1\nB\n", "e"));
        assert!(e.starts_with("e:2: expected an environment entry"), "{e}");
    }

    #[test]
    fn simple_formats_apply_to_every_job() {
        let env = parse_env("USER_HOME=/home/{USER}\nURL=http://x:1/a=b\n", "e").unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].selector, Selector::default());
        assert_eq!(
            env[0].vars,
            vec![
                ("USER_HOME".into(), "/home/{USER}".into()),
                ("URL".into(), "http://x:1/a=b".into())
            ]
        );
        let ports = parse_ports("64235\n8080\n\n# more\nJobType: adhoc\nPorts: 6210\n", "p").unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].ports, vec![64235, 8080]);
        assert_eq!(ports[1].selector.job_type, JobTypeFilter::Adhoc);

        let f = FilterFiles {
            env,
            ports,
            ..Default::default()
        };
        let mut j = job("dave", "Local", &["jobType:session"]);
        f.apply(&mut j, &[]);
        assert_eq!(
            j.environment[0],
            NameValue {
                name: "USER_HOME".into(),
                value: "/home/dave".into()
            }
        );
        let targets: Vec<u32> = j.exposed_ports.iter().map(|p| p.target_port).collect();
        assert_eq!(targets, [64235, 8080]);
        assert_eq!(j.exposed_ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(j.exposed_ports[0].published_port, None);
    }

    #[test]
    fn guide_env_and_ports_records_with_continuations() {
        let env = "\
JobType: session
Environment: IS_SESSION=1
  SESSION_USER={USER}

JobType: adhoc
Environment:
\tIS_ADHOC=1

JobType: any
Cluster: Kubernetes
Environment: IN_K8S=yes
";
        let ports = "JobType: adhoc\nPorts: 6210\n\n# additional Kubernetes ports to expose\nJobType: adhoc\nCluster: Kubernetes\nPorts: 4434\n    4435\n";
        let f = files("", env, ports);
        assert_eq!(f.env.len(), 3);
        assert_eq!(f.env[1].vars, vec![("IS_ADHOC".into(), "1".into())]);

        let mut s = job("erin", "Kubernetes", &["jobType:session"]);
        f.apply(&mut s, &[]);
        let names: Vec<(&str, &str)> = s
            .environment
            .iter()
            .map(|nv| (nv.name.as_str(), nv.value.as_str()))
            .collect();
        assert_eq!(
            names,
            [("IS_SESSION", "1"), ("SESSION_USER", "erin"), ("IN_K8S", "yes")]
        );
        assert!(s.exposed_ports.is_empty());

        let mut a = job("erin", "Kubernetes", &["jobType:adhoc"]);
        f.apply(&mut a, &[]);
        let targets: Vec<u32> = a.exposed_ports.iter().map(|p| p.target_port).collect();
        assert_eq!(targets, [6210, 4434, 4435]);
        let mut l = job("erin", "Local", &["jobType:adhoc"]);
        f.apply(&mut l, &[]);
        let targets: Vec<u32> = l.exposed_ports.iter().map(|p| p.target_port).collect();
        assert_eq!(targets, [6210]);
    }

    #[test]
    fn job_type_and_workbench_come_from_tags() {
        let text = "\
JobType: session
Ports: 1

JobType: adhoc
Ports: 2

JobType: any
Ports: 3

Workbench: VS Code
Ports: 4

Workbench: any
Ports: 5
";
        let f = files("", "", text);
        let ports = |tags: &[&str]| -> Vec<u32> {
            let mut j = job("u", "c", tags);
            f.apply(&mut j, &[]);
            j.exposed_ports.iter().map(|p| p.target_port).collect()
        };
        assert_eq!(ports(&[]), [3, 5], "untagged jobs get only 'any' entries");
        assert_eq!(ports(&["jobType:session"]), [1, 3, 5]);
        assert_eq!(ports(&["jobType:adhoc", "workbench:vs code"]), [2, 3, 4, 5]);
        assert_eq!(
            ports(&["workbench:VS CODE"]),
            [3, 4, 5],
            "workbench is case-insensitive"
        );
        assert_eq!(ports(&["workbench:rstudio"]), [3, 5]);
    }

    #[test]
    fn cluster_user_and_group_filters() {
        let text = "\
Cluster: Slurm
Environment: A=cluster

User: alice, bob
Environment: B=user

Group: staff
Environment: C=group
";
        let f = files("", text, "");
        let env = |user: &str, cluster: &str, groups: &[&str]| -> Vec<String> {
            let mut j = job(user, cluster, &[]);
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            f.apply(&mut j, &groups);
            j.environment.into_iter().map(|nv| nv.name).collect()
        };
        assert_eq!(env("alice", "Slurm", &[]), ["A", "B"]);
        assert_eq!(env("bob", "Local", &["users", "staff"]), ["B", "C"]);
        assert_eq!(env("carol", "Local", &["users"]), Vec::<String>::new());
        assert_eq!(env("carol", "Local", &["staff"]), ["C"]);
    }

    #[test]
    fn file_env_overrides_job_env_and_existing_mounts_and_ports_are_kept() {
        let f = files(
            "MountType: Host\nPath: /srv/{USER}\nMountPath: /home\n\nMountType: Host\nPath: /d\nMountPath: /d\n",
            "A=admin\nC=new\n\nA=later\n",
            "80\n443\n",
        );
        let mut j = job("fay", "Local", &[]);
        j.environment = vec![
            NameValue {
                name: "B".into(),
                value: "job".into(),
            },
            NameValue {
                name: "A".into(),
                value: "job".into(),
            },
        ];
        let own = Mount {
            mount_path: "/home".into(),
            read_only: true,
            mount_source: MountSource {
                kind: "host".into(),
                source: json!({"path": "/mine"}),
            },
        };
        j.mounts = vec![own.clone()];
        j.exposed_ports = vec![ExposedPort {
            target_port: 443,
            published_port: Some(8443),
            protocol: None,
        }];
        f.apply(&mut j, &[]);
        let env: Vec<(&str, &str)> = j
            .environment
            .iter()
            .map(|nv| (nv.name.as_str(), nv.value.as_str()))
            .collect();
        assert_eq!(env, [("B", "job"), ("A", "later"), ("C", "new")]);
        assert_eq!(j.mounts.len(), 2);
        assert_eq!(j.mounts[0], own);
        assert_eq!(j.mounts[1].mount_path, "/d");
        assert_eq!(j.exposed_ports.len(), 2);
        assert_eq!(j.exposed_ports[0].published_port, Some(8443));
        assert_eq!(j.exposed_ports[1].target_port, 80);
    }

    #[test]
    fn passthrough_files_are_small_regular_files() {
        for path in ["/dev/zero", "/"] {
            let text = format!("MountType: Passthrough\nMountPath: /p\nFilePath: {path}\n");
            let e = parse_mounts_in(&text, MOUNTS_FILE, None).unwrap_err().to_string();
            assert!(e.contains("cannot be read"), "{e}");
        }
    }

    #[test]
    fn passthrough_reads_a_json_object_at_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pt.json"),
            r#"{"driver":"csi","opts":{"path":"/x/{USER}","n":12345678901234567890}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("list.json"), "[1,2]").unwrap();
        std::fs::write(
            dir.path().join(MOUNTS_FILE),
            "# relative to the config dir\nMountType: Passthrough\nFilePath: pt.json\nMountPath: /pt\n",
        )
        .unwrap();
        let f = FilterFiles::load(dir.path()).unwrap();
        let mut j = job("gus", "Local", &[]);
        f.apply(&mut j, &[]);
        assert_eq!(j.mounts[0].mount_source.kind, "passthrough");
        assert_eq!(
            serde_json::to_string(&j.mounts[0].mount_source.source).unwrap(),
            r#"{"driver":"csi","opts":{"path":"/x/{USER}","n":12345678901234567890}}"#,
            "passed through untouched"
        );

        let abs = dir.path().join("list.json").display().to_string();
        let e = err_text(parse_mounts(
            &format!("MountType: Passthrough\nMountPath: /p\nFilePath: {abs}\n"),
            "m",
        ));
        assert!(
            e.starts_with("m:3: Passthrough FilePath") && e.contains("not hold a JSON object"),
            "{e}"
        );
        let missing = dir.path().join("missing.json").display().to_string();
        let e = err_text(parse_mounts(
            &format!("MountType: Passthrough\nMountPath: /p\nFilePath: {missing}\n"),
            "m",
        ));
        assert!(
            e.starts_with("m:3: Passthrough FilePath") && e.contains("cannot be read"),
            "{e}"
        );
    }

    #[test]
    fn load_treats_missing_files_as_empty_and_reports_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FilterFiles::load(dir.path()).unwrap().is_empty());
        std::fs::write(dir.path().join(ENV_FILE), "A=1\n").unwrap();
        std::fs::write(dir.path().join(PORTS_FILE), "Ports: 8080\nPort: 1\n").unwrap();
        let e = FilterFiles::load(dir.path()).unwrap_err();
        assert_eq!(e.line(), Some(2));
        let text = e.to_string();
        assert!(text.contains("launcher-ports:2: unknown field 'Port'"), "{text}");
        assert!(text.starts_with(&dir.path().display().to_string()), "{text}");

        // A directory in place of a file cannot be read.
        std::fs::remove_file(dir.path().join(PORTS_FILE)).unwrap();
        std::fs::create_dir(dir.path().join(MOUNTS_FILE)).unwrap();
        let e = FilterFiles::load(dir.path()).unwrap_err();
        assert!(matches!(e, FilterError::Unreadable { .. }), "{e}");
        assert!(e.to_string().contains("launcher-mounts: cannot read"), "{e}");
    }

    #[test]
    fn apply_is_deterministic() {
        let f = files(
            GUIDE_MOUNTS,
            "X=1\n\nJobType: adhoc\nEnvironment: Y={USER}\n  X=2\n",
            "1\n2\n\nJobType: adhoc\nPorts: 2\n  3\n",
        );
        let base = job("hal", "Kubernetes", &["jobType:adhoc", "workbench:jupyterlab"]);
        let groups = vec!["g".to_string()];
        let mut a = base.clone();
        let mut b = base.clone();
        f.apply(&mut a, &groups);
        f.apply(&mut b, &groups);
        assert_eq!(a.to_canonical(), b.to_canonical());
        // Applying twice adds nothing new: mounts and ports are deduplicated, env is overwritten.
        let mut c = a.clone();
        f.apply(&mut c, &groups);
        assert_eq!(c.to_canonical(), a.to_canonical());
        let env: Vec<(&str, &str)> = a
            .environment
            .iter()
            .map(|nv| (nv.name.as_str(), nv.value.as_str()))
            .collect();
        assert_eq!(env, [("X", "2"), ("Y", "hal")]);
    }

    #[test]
    fn groups_come_from_the_user_database() {
        assert!(groups_of("root").contains(&"root".to_string()));
        assert!(groups_of("no-such-user-launcher-test").is_empty());
        assert!(groups_of("bad\0name").is_empty());
    }
}
