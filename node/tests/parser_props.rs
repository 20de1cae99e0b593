//! Property tests of what a node parses from text it did not write: the DCF filter files
//! (`launcher-mounts`, `launcher-env`, `launcher-ports`), `launcher.conf`, and the job body of a
//! submit. Whatever the text, parsing never panics, and a filter-file error names a line that
//! is in the file.
//!
//! Inputs are drawn two ways: arbitrary strings (which mostly fail on their first line), and
//! lines assembled from the formats' own keys, values and shapes, which get deep into the
//! parsers (continuations, duplicate keys, out-of-range numbers, unknown sections).

use launcher_node::admission::{check_depth, MAX_JSON_DEPTH};
use launcher_node::config;
use launcher_node::filters::{self, FilterError};
use launcher_storage::job::Job;
use proptest::prelude::*;

const CASES: u32 = 512;

/// A line of a filter file: a field from any of the three files (with near-miss spellings), an
/// indented continuation, a simple-format entry, a comment, a blank, or anything at all.
fn filter_line() -> impl Strategy<Value = String> {
    // Every field of the three files, and near misses of them.
    let mut fields: Vec<&str> = filters::MOUNT_KEYS
        .iter()
        .chain(&filters::ENV_KEYS)
        .chain(&filters::PORTS_KEYS)
        .copied()
        .collect();
    fields.sort_unstable();
    fields.dedup();
    fields.extend(["mounttype", "Bogus", ""]);
    let keys = prop::sample::select(fields);
    let values = prop::sample::select(vec![
        "",
        "Host",
        "Nfs",
        "CephFs",
        "GlusterFs",
        "AzureFile",
        "KubernetesPersistentVolumeClaim",
        "Passthrough",
        "session",
        "adhoc",
        "any",
        "true",
        "false",
        "/home/{USER}",
        "/nonexistent/launcher-prop-test.json",
        "a,b,,c",
        "A=1",
        "=x",
        "1",
        "0",
        "65535",
        "65536",
        "-1",
        "99999999999999999999",
        "{USER}",
        ":",
        "\u{0}",
    ]);
    let junk = "\\PC{0,24}";
    prop_oneof![
        4 => (keys.clone(), values.clone()).prop_map(|(k, v)| format!("{k}: {v}")),
        2 => (prop::sample::select(vec![" ", "\t", "    "]), values.clone())
            .prop_map(|(i, v)| format!("{i}{v}")),
        1 => values.prop_map(str::to_string),
        1 => Just(String::new()),
        1 => junk.prop_map(|j| format!("# {j}")),
        1 => junk.prop_map(|j| j.to_string()),
        1 => any::<String>(),
    ]
}

/// A file made of `line`s, with either line ending, sometimes ending without one.
fn file_of(line: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (
        prop::collection::vec(line, 0..40),
        prop::sample::select(vec!["\n", "\r\n"]),
        any::<bool>(),
    )
        .prop_map(|(lines, eol, last)| {
            let mut text = lines.join(eol);
            if last {
                text.push_str(eol);
            }
            text
        })
}

/// Either an assembled file or arbitrary text.
fn filter_text() -> impl Strategy<Value = String> {
    prop_oneof![3 => file_of(filter_line()), 1 => any::<String>()]
}

/// A value that is usually right for its field, and sometimes not.
fn mostly(good: Vec<&'static str>, bad: Vec<&'static str>) -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        30 => prop::sample::select(good).prop_map(str::to_string),
        1 => prop::sample::select(bad).prop_map(str::to_string),
        1 => "\\PC{0,16}",
    ]
}

/// The filter fields every record may carry, each present or not.
fn selector_lines() -> impl Strategy<Value = Vec<String>> {
    (
        prop::option::of(mostly(
            vec!["session", "adhoc", "any", "Session"],
            vec!["sometimes", ""],
        )),
        prop::option::of(mostly(vec!["rstudio", "any", "VSCode"], vec![""])),
        prop::option::of(mostly(vec!["Local", "Slurm"], vec![""])),
        prop::option::of(mostly(vec!["alice", "alice, bob", "*"], vec![",", ""])),
        prop::option::of(mostly(vec!["staff", "users,wheel"], vec![","])),
    )
        .prop_map(|(jt, wb, cl, us, gr)| {
            [
                ("JobType", jt),
                ("Workbench", wb),
                ("Cluster", cl),
                ("User", us),
                ("Group", gr),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}: {v}")))
            .collect()
        })
}

/// A JSON object file for Passthrough mounts to read.
const PASSTHROUGH_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/passthrough-mount.json");

/// A `launcher-mounts` record close to a valid one: a type, its fields, filters, in any order.
fn mount_record() -> impl Strategy<Value = Vec<String>> {
    let kinds = mostly(
        vec![
            "Host",
            "NFS",
            "nfs",
            "CephFs",
            "GlusterFs",
            "AzureFile",
            "KubernetesPersistentVolumeClaim",
            "Passthrough",
        ],
        vec!["Tmpfs", ""],
    );
    let path = mostly(
        vec!["/data", "/home/{USER}", "/scratch/shared"],
        vec!["", "relative"],
    );
    (
        kinds,
        path.clone(),
        path,
        mostly(vec!["nfs.example", "10.0.0.1"], vec![""]),
        prop::option::of(mostly(vec!["true", "false"], vec!["yes", "1"])),
        selector_lines(),
        prop::bool::weighted(0.1),
    )
        .prop_flat_map(|(kind, mount_path, path, host, read_only, mut lines, stray)| {
            lines.push(format!("MountType: {kind}"));
            lines.push(format!("MountPath: {mount_path}"));
            if let Some(r) = read_only {
                lines.push(format!("ReadOnly: {r}"));
            }
            let own: &[(&str, String)] = &[
                ("Path", path),
                ("Host", host),
                ("Monitors", "mon1:6789, mon2:6789".into()),
                ("SecretFile", "/etc/ceph/secret".into()),
                ("Endpoints", "gluster-ep".into()),
                ("SecretName", "azure-secret".into()),
                ("ShareName", "share".into()),
                ("ClaimName", "claim".into()),
                ("FilePath", PASSTHROUGH_FILE.into()),
            ];
            let wanted: &[&str] = match kind.to_ascii_lowercase().as_str() {
                "host" => &["Path"],
                "nfs" => &["Host", "Path"],
                "cephfs" => &["Monitors", "Path", "SecretFile"],
                "glusterfs" => &["Endpoints", "Path"],
                "azurefile" => &["SecretName", "ShareName"],
                "kubernetespersistentvolumeclaim" => &["ClaimName"],
                "passthrough" => &["FilePath"],
                _ => &["Path"],
            };
            for (k, v) in own {
                // A field of another type now and then: a mistake the parser must name.
                if wanted.contains(k) || (stray && *k == "Host") {
                    lines.push(format!("{k}: {v}"));
                }
            }
            Just(lines).prop_shuffle()
        })
}

/// A `launcher-env` record: the simple `KEY=VALUE` list, or fields with an `Environment` list
/// that goes on over indented lines.
fn env_record() -> impl Strategy<Value = Vec<String>> {
    let pair = mostly(
        vec!["A=1", "PATH=/usr/bin:{USER}", "EMPTY=", "K = spaced value"],
        vec!["=1", "NOEQ", "A B=1"],
    );
    prop_oneof![
        prop::collection::vec(pair.clone(), 1..5),
        (selector_lines(), prop::collection::vec(pair, 0..4)).prop_map(|(mut lines, vars)| {
            let mut vars = vars.into_iter();
            lines.push(format!("Environment: {}", vars.next().unwrap_or_default()));
            lines.extend(vars.map(|v| format!("  {v}")));
            lines
        }),
    ]
}

/// A `launcher-ports` record: the simple list of ports, or fields with a `Ports` list.
fn ports_record() -> impl Strategy<Value = Vec<String>> {
    let port = mostly(
        vec!["8080", "1", "65535", "443"],
        vec!["0", "65536", "-1", "http"],
    );
    prop_oneof![
        prop::collection::vec(port.clone(), 1..5),
        (selector_lines(), prop::collection::vec(port, 0..4)).prop_map(|(mut lines, ports)| {
            let mut ports = ports.into_iter();
            lines.push(format!("Ports: {}", ports.next().unwrap_or_default()));
            lines.extend(ports.map(|p| format!("\t{p}")));
            lines
        }),
    ]
}

/// Records separated by blank lines, with comments between some of them.
fn records_of(record: impl Strategy<Value = Vec<String>>) -> impl Strategy<Value = String> {
    prop::collection::vec((record, any::<bool>()), 0..5).prop_map(|records| {
        records
            .into_iter()
            .map(|(lines, comment)| {
                let body = lines.join("\n");
                if comment {
                    format!("# a record\n{body}")
                } else {
                    body
                }
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    })
}

/// An error from a filter file must point into it: a line the admin can go to.
fn check_filter_error(text: &str, file: &str, e: &FilterError) -> Result<(), TestCaseError> {
    let lines = text.lines().count();
    let line = e.line();
    prop_assert!(
        matches!(line, Some(l) if (1..=lines).contains(&l)),
        "error line {line:?} outside a {lines}-line file: {e}"
    );
    let shown = e.to_string();
    let prefix = format!("{file}:{}:", line.unwrap_or_default());
    prop_assert!(
        shown.starts_with(&prefix),
        "{shown:?} does not start with {prefix:?}"
    );
    Ok(())
}

/// A line of `launcher.conf`: a section header (good, unknown, malformed), a key of any section
/// with a value of any key's shape, a comment, a blank, or anything at all.
fn conf_line() -> impl Strategy<Value = String> {
    let headers = prop::sample::select(vec![
        "[server]",
        "[node]",
        "[cluster]",
        "[Server]",
        "[bogus]",
        "[server",
        "[]",
        "\u{feff}[server]",
    ]);
    let keys = prop::sample::select(vec![
        "address",
        "port",
        "unix-socket",
        "enable-ssl",
        "certificate-file",
        "certificate-key-file",
        "server-user",
        "authorization-enabled",
        "admin-group",
        "admin-users",
        "secure-cookie-key-file",
        "max-token-lifetime-seconds",
        "max-request-body-bytes",
        "thread-pool-size",
        "request-timeout-seconds",
        "bootstrap-timeout-seconds",
        "heartbeat-interval-seconds",
        "job-expiry-hours",
        "enable-debug-logging",
        "enable-metrics",
        "scratch-path",
        "nodes",
        "id",
        "grpc-address",
        "advertise-address",
        "data-dir",
        "join",
        "bootstrap-expect",
        "node-lost-timeout-seconds",
        "dead-member-removal-seconds",
        "snapshot-log-entries",
        "heartbeat-ms",
        "election-timeout-min-ms",
        "election-timeout-max-ms",
        "fast-failover",
        "cache-capacity-mb",
        "cluster-id",
        "name",
        "type",
        "exe",
        "plugin-name",
        "plugin-args",
        "shared-scheduler",
        "allowed-mount-sources",
        "min-uid",
        "max-cpu-count",
        "max-cpu-time-seconds",
        "max-memory-mb",
        "max-memory-swap-mb",
        "Port",
        "bogus",
        "",
    ]);
    let values = prop::sample::select(vec![
        "",
        "0",
        "1",
        "+1",
        "-1",
        "65535",
        "65536",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999",
        "1.5",
        "true",
        "yes",
        "no",
        "maybe",
        "127.0.0.1:0",
        "[::1]:0",
        "127.0.0.1:99999",
        "a,b,,c",
        "/nonexistent/launcher-prop-test",
        "relative/path",
        "/home/{USER}",
        "/a/../b",
        "Local",
        "Slurm",
        "Kubernetes",
        "root",
        "\u{0}",
    ]);
    prop_oneof![
        2 => headers.prop_map(str::to_string),
        6 => (keys, values, prop::sample::select(vec!["=", " = ", "=="]))
            .prop_map(|(k, v, eq)| format!("{k}{eq}{v}")),
        1 => Just(String::new()),
        1 => "\\PC{0,24}".prop_map(|j| format!("; {j}")),
        1 => "\\PC{0,24}",
        1 => any::<String>(),
    ]
}

fn conf_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => file_of(conf_line()),
        3 => conf_sections(),
        1 => any::<String>(),
    ]
}

/// Keys of each section with values of their own kind, so that most lines parse and the
/// cross-field checks (ports, addresses, timeouts, clusters) get to run.
const SERVER_VALUES: &[(&str, &[&str])] = &[
    ("address", &["127.0.0.1", "0.0.0.0", "::1"]),
    ("port", &["5559", "0", "65535"]),
    ("unix-socket", &["/run/launcher.sock", ""]),
    ("enable-ssl", &["0", "1"]),
    ("certificate-file", &["/etc/ssl/c.pem", ""]),
    ("authorization-enabled", &["1", "0"]),
    ("admin-users", &["alice,bob", ""]),
    ("max-token-lifetime-seconds", &["86400", "1", "0"]),
    ("max-request-body-bytes", &["1048576", "1", "0"]),
    ("request-timeout-seconds", &["120", "0"]),
    ("heartbeat-interval-seconds", &["5", "0"]),
    ("job-expiry-hours", &["24", "0"]),
    ("scratch-path", &["/var/lib/launcher", "relative"]),
    ("nodes", &["127.0.0.1:5500", "127.0.0.1:5500,127.0.0.2:5500"]),
];
const NODE_VALUES: &[(&str, &[&str])] = &[
    ("id", &["1", "2", "0"]),
    ("grpc-address", &["127.0.0.1:5500", "127.0.0.1:0", "nonsense"]),
    ("advertise-address", &["127.0.0.1:5500", ""]),
    ("data-dir", &["/var/lib/launcher/data", "relative"]),
    ("join", &["127.0.0.2:5500", ""]),
    ("bootstrap-expect", &["3", "1", "0"]),
    ("heartbeat-ms", &["100", "0", "5000"]),
    ("election-timeout-min-ms", &["300", "50", "10000"]),
    ("election-timeout-max-ms", &["600", "100", "20"]),
    ("snapshot-log-entries", &["10000", "0"]),
    ("fast-failover", &["1", "0"]),
    ("cache-capacity-mb", &["64", "0"]),
];
const CLUSTER_VALUES: &[(&str, &[&str])] = &[
    ("name", &["Local", "Slurm", "Local", ""]),
    ("type", &["Local", "Slurm", "Kubernetes"]),
    ("exe", &["/usr/lib/launcher/plugin", "relative"]),
    ("plugin-name", &["local", "slurm", ""]),
    ("shared-scheduler", &["1", "0"]),
    (
        "allowed-mount-sources",
        &["/home/{USER},/data", "/a/../b", "relative"],
    ),
    ("min-uid", &["1000", "0"]),
    ("max-cpu-count", &["4", "0.5", "0", "-1"]),
    ("max-memory-mb", &["1024", "0"]),
];

fn section(
    header: &'static str,
    table: &'static [(&'static str, &'static [&'static str])],
) -> BoxedStrategy<String> {
    let line =
        (0..table.len(), any::<prop::sample::Index>(), any::<bool>()).prop_map(move |(k, v, spaced)| {
            let (key, values) = table[k];
            let eq = if spaced { " = " } else { "=" };
            format!("{key}{eq}{}", values[v.index(values.len())])
        });
    prop::collection::vec(line, 0..8)
        .prop_map(move |lines| format!("{header}\n{}", lines.join("\n")))
        .boxed()
}

/// A file of `[server]`, `[node]` and `[cluster]` sections with plausible values.
fn conf_sections() -> impl Strategy<Value = String> {
    (
        prop::option::of(section("[server]", SERVER_VALUES)),
        prop::option::of(section("[node]", NODE_VALUES)),
        prop::collection::vec(section("[cluster]", CLUSTER_VALUES), 0..3),
    )
        .prop_map(|(server, node, clusters)| {
            server
                .into_iter()
                .chain(node)
                .chain(clusters)
                .collect::<Vec<_>>()
                .join("\n\n")
        })
}

/// JSON nested `depth` deep: arrays (kind 0), objects (1), or both in turn (2).
fn nested(depth: usize, kind: u8) -> String {
    let array = |i: usize| match kind {
        0 => true,
        1 => false,
        _ => i.is_multiple_of(2),
    };
    let mut s = String::new();
    for i in 0..depth {
        s.push_str(if array(i) { "[" } else { "{\"a\":" });
    }
    s.push('1');
    for i in (0..depth).rev() {
        s.push(if array(i) { ']' } else { '}' });
    }
    s
}

/// What the submit path does with a body before stamping it: UTF-8 (service.rs `submit_job`),
/// then writes.rs `decode_submission`. Any failure is the client's (a 4xx), never a panic.
fn decode_submission(body: &[u8]) -> Result<Job, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    launcher_node::writes::decode_submission(text, usize::MAX).map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn mounts_files_never_panic_and_errors_name_a_line_of_the_file(
        text in prop_oneof![filter_text(), records_of(mount_record())],
    ) {
        if let Err(e) = filters::parse_mounts(&text, "launcher-mounts") {
            check_filter_error(&text, "launcher-mounts", &e)?;
        }
    }

    #[test]
    fn env_files_never_panic_and_errors_name_a_line_of_the_file(
        text in prop_oneof![filter_text(), records_of(env_record())],
    ) {
        match filters::parse_env(&text, "launcher-env") {
            Err(e) => check_filter_error(&text, "launcher-env", &e)?,
            Ok(entries) => {
                let lines = text.lines().count();
                for e in entries {
                    prop_assert!((1..=lines).contains(&e.line), "entry at line {} of {lines}", e.line);
                }
            }
        }
    }

    #[test]
    fn ports_files_never_panic_and_errors_name_a_line_of_the_file(
        text in prop_oneof![filter_text(), records_of(ports_record())],
    ) {
        match filters::parse_ports(&text, "launcher-ports") {
            Err(e) => check_filter_error(&text, "launcher-ports", &e)?,
            Ok(entries) => {
                for e in entries {
                    prop_assert!(e.ports.iter().all(|p| *p >= 1));
                }
            }
        }
    }

    #[test]
    fn launcher_conf_never_panics_and_errors_name_lines_of_the_file(text in conf_text()) {
        let dir = std::env::temp_dir();
        match config::parse_with_dir(&text, "launcher.conf", &dir) {
            Ok(c) => {
                // A configuration that parsed can be shown and checked again without panicking.
                let _ = c.dump();
                let _ = c.validate();
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                let lines = text.lines().count();
                for e in &errors {
                    prop_assert!(
                        e.line.is_none_or(|l| (1..=lines).contains(&l)),
                        "error at line {:?} of a {lines}-line file: {e}", e.line
                    );
                }
            }
        }
    }

    #[test]
    fn submitted_job_bodies_never_panic(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            any::<String>().prop_map(String::into_bytes),
        ],
    ) {
        let _ = decode_submission(&body);
    }

    #[test]
    fn the_nesting_limit_keeps_every_accepted_body_readable(depth in 1usize..300, kind in 0u8..3) {
        let text = nested(depth, kind);
        let accepted = check_depth(&text).is_ok();
        prop_assert_eq!(accepted, depth <= MAX_JSON_DEPTH, "depth {}", depth);
        if accepted {
            prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        }
    }

    #[test]
    fn deeply_nested_job_bodies_are_refused(depth in 10usize..10_000, kind in 0u8..3) {
        let deep = nested(depth, kind);
        // As the whole body and as the value of a typed field: never a job.
        for body in [
            deep.clone(),
            format!(r#"{{"name":"n","cluster":"Local","command":"true","args":{deep}}}"#),
            format!(r#"{{"name":"n","cluster":"Local","command":"true","container":{deep}}}"#),
        ] {
            prop_assert!(decode_submission(body.as_bytes()).is_err(), "a body nested {depth} deep was taken");
        }
    }
}

/// A job the submit path accepts is one every later reader can parse as a JSON value (field
/// projection in service.rs, listings, the plugin given the job): raw `metadata` is skipped by
/// serde without its recursion limit, so only the submit-time nesting limit keeps a job of
/// 127+ levels, which would be stored and then fail every read with a 500, out.
#[test]
fn accepted_jobs_can_be_read_back_as_json() {
    for depth in [
        1usize,
        10,
        MAX_JSON_DEPTH - 2,
        MAX_JSON_DEPTH - 1,
        MAX_JSON_DEPTH,
        100,
        127,
        200,
        10_000,
    ] {
        for kind in 0..3 {
            let body = format!(
                r#"{{"name":"n","cluster":"Local","command":"true","metadata":{{"a":{}}}}}"#,
                nested(depth, kind)
            );
            let Ok(job) = decode_submission(body.as_bytes()) else {
                assert!(
                    depth + 2 > MAX_JSON_DEPTH,
                    "metadata nested {depth} deep was refused"
                );
                continue;
            };
            let back =
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&job.to_canonical());
            assert!(
                back.is_ok(),
                "metadata nested {depth} deep was accepted but cannot be read back: {back:?}"
            );
        }
    }
}

/// The record generators start from valid records; this one of each shape must parse, or the
/// properties above would only ever see errors.
#[test]
fn the_generators_valid_records_parse() {
    let mounts = format!(
        "MountType: Passthrough\nMountPath: /p\nFilePath: {PASSTHROUGH_FILE}\n\n\
         # a record\nJobType: session\nMountType: NFS\nMountPath: /n\nHost: nfs.example\nPath: /data\n"
    );
    assert_eq!(
        filters::parse_mounts(&mounts, "m").expect("valid mounts").len(),
        2
    );
    let env = "A=1\nEMPTY=\n\nUser: alice, bob\nEnvironment: K = spaced value\n  PATH=/usr/bin:{USER}\n";
    assert_eq!(filters::parse_env(env, "e").expect("valid env").len(), 2);
    let ports = "8080\n443\n\nCluster: Local\nPorts: 1\n\t65535\n";
    assert_eq!(filters::parse_ports(ports, "p").expect("valid ports").len(), 2);
}
