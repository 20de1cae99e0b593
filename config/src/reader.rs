//! The line reader: `launcher.conf`'s lines against the sections and key tables of one program.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

use crate::{ConfigError, SECTION_NAMES};

/// One key of a section: its name in the file, how to set it from text, how to show its value
/// (so that a dump parses back to the same configuration).
pub struct KeySpec<T> {
    pub name: &'static str,
    pub set: fn(&mut T, &str) -> Result<(), String>,
    pub get: fn(&T) -> String,
}

impl<T> KeySpec<T> {
    /// The entry of `name` in `keys`.
    pub fn find<'k>(keys: &'k [KeySpec<T>], name: &str) -> Option<&'k KeySpec<T>> {
        keys.iter().find(|k| k.name == name)
    }

    /// The names in `keys`, in table order.
    pub fn names(keys: &[KeySpec<T>]) -> Vec<&'static str> {
        keys.iter().map(|k| k.name).collect()
    }

    /// Sets `key` of `target` from `value` through `keys`.
    pub fn apply(keys: &[KeySpec<T>], target: &mut T, key: &str, value: &str) -> Result<(), String> {
        match Self::find(keys, key) {
            Some(spec) => (spec.set)(target, value),
            None => Err("unknown key".to_string()),
        }
    }

    /// `[name]` and one `key=value` line per key of `keys`, for a dump of the configuration.
    pub fn write_section(out: &mut String, name: &str, keys: &[KeySpec<T>], value: &T) {
        out.push_str(&format!("\n[{name}]\n"));
        for key in keys {
            out.push_str(&format!("{}={}\n", key.name, (key.get)(value)));
        }
    }
}

/// What a section header opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open<S> {
    /// A section whose keys this program reads. Unless `repeat`, it may appear once.
    Keys { section: S, repeat: bool },
    /// A section of the file that this program does not read: its lines are skipped.
    Skip,
}

/// The sections a program reads, and where their values go.
pub trait Sections {
    /// Names one section of this program (for a repeatable one, one occurrence of it).
    type Id: Copy + Eq + Hash + Debug;

    /// What the header `[name]` opens, or `None` for a section the file format does not have.
    /// Called once per header, so a repeatable section can make room for its values here.
    fn open(&mut self, name: &str) -> Option<Open<Self::Id>>;

    /// The section's name, as problems show it.
    fn name(&self, id: Self::Id) -> &'static str;

    /// The `'static` name of `key` when section `id` accepts it.
    fn known_key(&self, id: Self::Id, key: &str) -> Option<&'static str>;

    /// Every key section `id` accepts, for "did you mean" and "accepts: ...".
    fn key_names(&self, id: Self::Id) -> Vec<&'static str>;

    /// Another section that accepts `key`, for "it belongs in [x]"; `None` by default.
    fn home_of(&self, _id: Self::Id, _key: &str) -> Option<&'static str> {
        None
    }

    /// Sets `key` of section `id` from its text.
    fn set(&mut self, id: Self::Id, key: &'static str, value: &str) -> Result<(), String>;
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A line of the file.
    Line(usize),
    /// An environment variable.
    Env(&'static str),
}

/// Where each section and value came from, so that checks on the typed configuration can still
/// point at a line (or a variable).
#[derive(Debug)]
pub struct Origins<S> {
    /// The file, as problems name it.
    pub file: String,
    /// Line of each section header.
    pub sections: HashMap<S, usize>,
    /// Where each key that was set came from.
    pub keys: HashMap<(S, &'static str), Origin>,
    /// Keys whose value did not parse (already reported): checks involving them are skipped.
    pub bad: HashSet<(S, &'static str)>,
}

impl<S: Copy + Eq + Hash> Origins<S> {
    /// Nothing known yet about `file`.
    pub fn new(file: impl Into<String>) -> Self {
        Origins {
            file: file.into(),
            sections: HashMap::new(),
            keys: HashMap::new(),
            bad: HashSet::new(),
        }
    }

    /// A problem at `line` of the file.
    pub fn at(&self, line: usize, section: &str, key: Option<&str>, message: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: Some(line),
            section: section.to_string(),
            key: key.map(str::to_string),
            message,
        }
    }

    /// A problem about `key` of `section` (`id`), at the line or variable that set it (or the
    /// first of `related` that was set), else at the section's header.
    pub fn about(
        &self,
        id: S,
        section: &str,
        key: &'static str,
        related: &[&'static str],
        message: String,
    ) -> ConfigError {
        let origin = std::iter::once(&key)
            .chain(related)
            .find_map(|k| self.keys.get(&(id, *k)));
        let (file, line) = match origin {
            Some(Origin::Line(n)) => (self.file.clone(), Some(*n)),
            Some(Origin::Env(var)) => (format!("environment variable {var}"), None),
            None => (self.file.clone(), self.sections.get(&id).copied()),
        };
        ConfigError {
            file,
            line,
            section: section.to_string(),
            key: Some(key.to_string()),
            message,
        }
    }

    /// Whether none of `keys` of section `id` failed to parse.
    pub fn usable(&self, id: S, keys: &[&'static str]) -> bool {
        keys.iter().all(|k| !self.bad.contains(&(id, *k)))
    }
}

/// What the reader is inside.
enum Current<S> {
    /// Before the first section header.
    Start,
    /// A section this program skips, or an unknown or malformed one (already reported).
    Skip,
    In(S),
}

/// Reads `text` into `target`, recording origins; returns every problem found, in line order.
pub fn read<T: Sections>(text: &str, origins: &mut Origins<T::Id>, target: &mut T) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    let mut current = Current::Start;
    for (index, raw) in text.lines().enumerate() {
        let n = index + 1;
        let line = if index == 0 {
            raw.trim_start_matches('\u{feff}')
        } else {
            raw
        }
        .trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            current = open_section(rest, line, n, origins, target, &mut problems);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            let message = format!("expected key=value, a [section] header or a # comment; got '{line}'");
            problems.push(origins.at(n, "", None, message));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let id = match current {
            Current::Start => {
                let message = "key before any section header; put it under [server], [node] or [cluster]";
                problems.push(origins.at(n, "", Some(key), message.to_string()));
                continue;
            }
            Current::Skip => continue,
            Current::In(id) => id,
        };
        let section = target.name(id);
        if key.is_empty() {
            let message = format!("missing key before '=' in '{line}'");
            problems.push(origins.at(n, section, None, message));
            continue;
        }
        let Some(key) = target.known_key(id, key) else {
            problems.push(origins.at(n, section, Some(key), unknown_key_message(target, id, key)));
            continue;
        };
        if let Some(Origin::Line(first)) = origins.keys.get(&(id, key)) {
            let message =
                format!("duplicate key (first set on line {first}); each key may appear once per section");
            problems.push(origins.at(n, section, Some(key), message));
            continue;
        }
        origins.keys.insert((id, key), Origin::Line(n));
        if let Err(message) = target.set(id, key, value) {
            problems.push(origins.at(n, section, Some(key), message));
            origins.bad.insert((id, key));
        }
    }
    problems
}

fn open_section<T: Sections>(
    rest: &str,
    line: &str,
    n: usize,
    origins: &mut Origins<T::Id>,
    target: &mut T,
    problems: &mut Vec<ConfigError>,
) -> Current<T::Id> {
    let Some(name) = rest.strip_suffix(']').map(str::trim) else {
        let message = format!("malformed section header '{line}': expected [name]");
        problems.push(origins.at(n, "", None, message));
        return Current::Skip;
    };
    match target.open(name) {
        Some(Open::Keys { section, repeat }) => {
            match origins.sections.get(&section) {
                Some(first) if !repeat => {
                    let message = format!("section appears twice (first on line {first}); merge them");
                    problems.push(origins.at(n, name, None, message));
                }
                _ => {
                    origins.sections.insert(section, n);
                }
            }
            Current::In(section)
        }
        Some(Open::Skip) => Current::Skip,
        None => {
            let lower = name.to_ascii_lowercase();
            let hint = if SECTION_NAMES.contains(&lower.as_str()) {
                format!("section names are lowercase: use [{lower}]")
            } else {
                "expected [server], [node] or [cluster]".to_string()
            };
            problems.push(origins.at(n, "", None, format!("unknown section [{name}]; {hint}")));
            Current::Skip
        }
    }
}

/// Why `key` is not one of section `id`'s, and what was probably meant.
fn unknown_key_message<T: Sections>(target: &T, id: T::Id, key: &str) -> String {
    let section = target.name(id);
    if let Some(home) = target.home_of(id, key) {
        return format!("unknown key in [{section}]; it belongs in [{home}]");
    }
    let wanted = key.to_ascii_lowercase().replace('_', "-");
    let names = target.key_names(id);
    let best = names
        .iter()
        .map(|k| (strsim::levenshtein(&wanted, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!("unknown key; did you mean '{k}'?"),
        None => format!("unknown key; [{section}] accepts: {}", names.join(", ")),
    }
}

/// Applies environment overrides `(variable, section, key)`: a set, non-blank variable replaces
/// the key's value from the file. Returns the problems the values cause, naming the variable.
pub fn apply_env<T: Sections>(
    overrides: impl IntoIterator<Item = (&'static str, T::Id, &'static str)>,
    env: &dyn Fn(&str) -> Option<String>,
    origins: &mut Origins<T::Id>,
    target: &mut T,
) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    for (var, id, key) in overrides {
        let Some(value) = env(var) else { continue };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        origins.keys.insert((id, key), Origin::Env(var));
        origins.bad.remove(&(id, key));
        if let Err(message) = target.set(id, key, value) {
            problems.push(ConfigError::from_env(var, target.name(id), key, message));
            origins.bad.insert((id, key));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program reading `[server]` (keys `port` and `nodes`) and skipping `[node]` and
    /// `[cluster]`.
    #[derive(Default)]
    struct Server {
        port: u16,
        nodes: Vec<String>,
    }

    const KEYS: &[KeySpec<Server>] = &[
        KeySpec {
            name: "port",
            set: |s, v| {
                s.port = crate::values::parse_port(v)?;
                Ok(())
            },
            get: |s| s.port.to_string(),
        },
        KeySpec {
            name: "nodes",
            set: |s, v| {
                s.nodes = crate::values::parse_list(v);
                Ok(())
            },
            get: |s| s.nodes.join(","),
        },
    ];

    impl Sections for Server {
        type Id = ();
        fn open(&mut self, name: &str) -> Option<Open<()>> {
            match name {
                "server" => Some(Open::Keys {
                    section: (),
                    repeat: false,
                }),
                "node" | "cluster" => Some(Open::Skip),
                _ => None,
            }
        }
        fn name(&self, _: ()) -> &'static str {
            "server"
        }
        fn known_key(&self, _: (), key: &str) -> Option<&'static str> {
            KeySpec::find(KEYS, key).map(|k| k.name)
        }
        fn key_names(&self, _: ()) -> Vec<&'static str> {
            KeySpec::names(KEYS)
        }
        fn set(&mut self, _: (), key: &'static str, value: &str) -> Result<(), String> {
            KeySpec::apply(KEYS, self, key, value)
        }
    }

    fn read_text(text: &str) -> (Server, Origins<()>, Vec<String>) {
        let mut server = Server::default();
        let mut origins = Origins::new("launcher.conf");
        let problems = read(text, &mut origins, &mut server);
        (
            server,
            origins,
            problems.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn values_and_their_lines_are_read_and_skipped_sections_ignored() {
        let (server, origins, problems) =
            read_text("\u{feff}# comment\n[server]\nport = 5559\n\n[node]\nanything=at all\n[server2]\n");
        assert_eq!(server.port, 5559);
        assert_eq!(origins.keys.get(&((), "port")), Some(&Origin::Line(3)));
        assert_eq!(origins.sections.get(&()), Some(&2));
        assert_eq!(
            problems,
            vec!["launcher.conf:7: unknown section [server2]; expected [server], [node] or [cluster]"]
        );
    }

    #[test]
    fn every_line_problem_names_its_line_section_and_key() {
        let (_, origins, problems) = read_text(
            "port=1\n[Server]\n[server]\nprot=2\nnode=x\nport=70000\nport=3\n=4\njunk\n[server\n[server]\n",
        );
        assert_eq!(
            problems,
            vec![
                "launcher.conf:1: port: key before any section header; put it under [server], [node] or [cluster]",
                "launcher.conf:2: unknown section [Server]; section names are lowercase: use [server]",
                "launcher.conf:4: [server] prot: unknown key; did you mean 'port'?",
                "launcher.conf:5: [server] node: unknown key; did you mean 'nodes'?",
                "launcher.conf:6: [server] port: 70000 is out of range (0 to 65535)",
                "launcher.conf:7: [server] port: duplicate key (first set on line 6); each key may appear once per section",
                "launcher.conf:8: [server] missing key before '=' in '=4'",
                "launcher.conf:9: expected key=value, a [section] header or a # comment; got 'junk'",
                "launcher.conf:10: malformed section header '[server': expected [name]",
                "launcher.conf:11: [server] section appears twice (first on line 3); merge them",
            ]
        );
        assert!(!origins.usable((), &["port"]));
        assert!(origins.usable((), &["nodes"]));
    }

    #[test]
    fn an_unlike_key_lists_what_the_section_accepts() {
        let (_, _, problems) = read_text("[server]\ncompletely-different=1\n");
        assert_eq!(
            problems,
            vec![
                "launcher.conf:2: [server] completely-different: unknown key; [server] accepts: port, nodes"
            ]
        );
    }

    #[test]
    fn the_environment_overrides_the_file_and_its_problems_name_the_variable() {
        let mut server = Server::default();
        let mut origins = Origins::new("launcher.conf");
        assert!(read("[server]\nport=1\nnodes=a:1\n", &mut origins, &mut server).is_empty());
        let env = |var: &str| match var {
            "LAUNCHER_PORT" => Some(" 2 ".to_string()),
            "LAUNCHER_NODES" => Some("   ".to_string()),
            "LAUNCHER_BAD" => Some("x".to_string()),
            _ => None,
        };
        let problems = apply_env(
            [("LAUNCHER_PORT", (), "port"), ("LAUNCHER_NODES", (), "nodes")],
            &env,
            &mut origins,
            &mut server,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((server.port, server.nodes.clone()), (2, vec!["a:1".to_string()]));
        assert_eq!(
            origins.keys.get(&((), "port")),
            Some(&Origin::Env("LAUNCHER_PORT"))
        );
        let problems = apply_env([("LAUNCHER_BAD", (), "port")], &env, &mut origins, &mut server);
        assert_eq!(
            problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["environment variable LAUNCHER_BAD: [server] port: expected a whole number, got 'x'"]
        );
        let about = origins.about((), "server", "port", &[], "must be even".into());
        assert_eq!(
            about.to_string(),
            "environment variable LAUNCHER_BAD: [server] port: must be even"
        );
    }

    #[test]
    fn a_dump_reads_back_to_the_same_values() {
        let (server, _, _) = read_text("[server]\nport=7\nnodes=a:1, b:2\n");
        let mut out = String::new();
        KeySpec::write_section(&mut out, "server", KEYS, &server);
        let (again, _, problems) = read_text(&out);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            (again.port, again.nodes),
            (7, vec!["a:1".to_string(), "b:2".to_string()])
        );
    }
}
