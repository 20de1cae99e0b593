//! The privileged spawner of privilege separation: the one root process a node keeps once it
//! runs as `server-user`, and its wire format.
//!
//! The node starts it (`launcher-node spawner`, hidden) while still root, before it gives root
//! up, with one end of a socket pair as its stdin, and writes it one [`Init`] naming every
//! plugin it may ever start. Afterwards the spawner does only this, one JSON line per request:
//! start a plugin of that fixed list, signal (SIGTERM or SIGKILL) a plugin it started, and
//! report each one's exit. A node that was taken over cannot make it run anything else, nor
//! signal anything else, nor run two copies of one plugin.
//!
//! A plugin's stdin/stdout and its stderr reach the node without passing descriptors: the node
//! listens on a unix socket in a 0700 directory of its own; for each start the spawner connects
//! to it twice (as `server-user`, so a path the node swapped for a link reaches nothing the node
//! could not reach itself), writes a [`header`] naming the start and the stream, and hands the
//! two connections to the plugin as stdin+stdout (a socket is bidirectional) and stderr.
//!
//! It exits when the node goes away: at EOF on its stdin, and through `PR_SET_PDEATHSIG`.
//! Running plugins are left alone then, as a crashed node leaves them today: they see the end of
//! their input and stop by themselves.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::{Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

/// One plugin the spawner may start, exactly as the node computed it while still root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// The `[cluster]` it serves: how requests name it.
    pub cluster: String,
    pub exe: PathBuf,
    pub args: Vec<String>,
    /// Added to the spawner's environment, which is the node's.
    pub env: Vec<(String, String)>,
}

/// The spawner's first input line, written before the node gives up root; it never changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Init {
    /// Where the node accepts the plugins' connections.
    pub socket: PathBuf,
    /// `server-user`: the spawner connects to `socket` with these ids.
    pub uid: u32,
    pub gid: u32,
    pub plugins: Vec<SpawnSpec>,
}

/// The signals a node may ask for: the graceful stop and the kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopSignal {
    Term,
    Kill,
}

impl StopSignal {
    fn signal(self) -> Signal {
        match self {
            StopSignal::Term => Signal::SIGTERM,
            StopSignal::Kill => Signal::SIGKILL,
        }
    }
}

/// A node's request. Ids are the node's, strictly increasing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Start { id: u64, cluster: String },
    Signal { id: u64, signal: StopSignal },
}

/// What the spawner reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    Started {
        id: u64,
        pid: u32,
    },
    Failed {
        id: u64,
        error: String,
    },
    /// `status` as a process exit reads (`exit status: 0`, `signal: 9 (SIGKILL)`).
    Exited {
        id: u64,
        status: String,
    },
}

/// Bytes before a plugin connection's stream: the start id (big-endian) and [`STDIO`] or
/// [`STDERR`].
pub const HEADER_LEN: usize = 9;
/// The connection that becomes the plugin's stdin and stdout.
pub const STDIO: u8 = b'o';
/// The connection that becomes the plugin's stderr.
pub const STDERR: u8 = b'e';

/// The header of start `id`'s connection of `kind`.
pub fn header(id: u64, kind: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&id.to_be_bytes());
    h[8] = kind;
    h
}

/// Reads a header back: (start id, kind).
pub fn parse_header(h: &[u8; HEADER_LEN]) -> (u64, u8) {
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    (u64::from_be_bytes(id), h[8])
}

/// The longest request line; the init line may list many plugins with long arguments.
const MAX_LINE: u64 = 1 << 20;

/// The plugins running now and the last id seen: what every request is checked against.
#[derive(Debug, Default)]
struct Ledger {
    /// Start id → (cluster, pid), until the process has exited (it is removed before the
    /// reap, so a pid taken from here is never a reused one).
    live: HashMap<u64, (String, Pid)>,
    last_id: u64,
}

impl Ledger {
    /// The plugin a start request may start: one of the list, under a new id, and not while
    /// the same plugin still runs.
    fn check_start<'a>(
        &self,
        plugins: &'a [SpawnSpec],
        id: u64,
        cluster: &str,
    ) -> Result<&'a SpawnSpec, String> {
        let spec = plugins
            .iter()
            .find(|p| p.cluster == cluster)
            .ok_or_else(|| format!("no plugin of cluster '{cluster}' was configured"))?;
        if id <= self.last_id {
            return Err(format!(
                "start id {id} is not above the last one ({})",
                self.last_id
            ));
        }
        if let Some((other, (_, pid))) = self.live.iter().find(|(_, (c, _))| c == cluster) {
            return Err(format!(
                "the plugin of cluster '{cluster}' still runs (start {other}, pid {pid})"
            ));
        }
        Ok(spec)
    }

    /// The process a signal request may reach: only a live plugin of ours.
    fn target(&self, id: u64) -> Option<Pid> {
        self.live.get(&id).map(|(_, pid)| *pid)
    }
}

struct Spawner {
    init: Init,
    ledger: Mutex<Ledger>,
    /// To the node; one whole line per write, from any thread.
    out: Mutex<UnixStream>,
}

impl Spawner {
    fn report(&self, event: &Event) {
        let mut line = serde_json::to_vec(event).expect("events serialize");
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // The node is gone if this fails: the read loop sees EOF and ends the spawner.
        let _ = out.write_all(&line);
    }

    fn handle(self: &Arc<Self>, req: Request) {
        match req {
            Request::Start { id, cluster } => {
                let checked = {
                    let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
                    ledger.check_start(&self.init.plugins, id, &cluster).cloned()
                };
                let spec = match checked {
                    Ok(spec) => spec,
                    Err(error) => {
                        eprintln!("launcher-node spawner: refused to start a plugin: {error}");
                        return self.report(&Event::Failed { id, error });
                    }
                };
                self.ledger.lock().unwrap_or_else(|p| p.into_inner()).last_id = id;
                match self.start(id, &spec) {
                    Ok(pid) => self.report(&Event::Started { id, pid }),
                    Err(error) => self.report(&Event::Failed { id, error }),
                }
            }
            Request::Signal { id, signal } => {
                let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
                // Under the lock: the waiter removes the entry before it reaps, so the pid is
                // still this plugin's (at worst a zombie).
                if let Some(pid) = ledger.target(id) {
                    let _ = kill(pid, signal.signal());
                }
            }
        }
    }

    /// Connects the plugin's two streams to the node, starts it, and watches for its exit.
    fn start(self: &Arc<Self>, id: u64, spec: &SpawnSpec) -> Result<u32, String> {
        let (uid, gid) = (Uid::from_raw(self.init.uid), Gid::from_raw(self.init.gid));
        let connect = |kind: u8| -> Result<UnixStream, String> {
            let mut s = connect_as(&self.init.socket, uid, gid).map_err(|e| {
                format!(
                    "cannot connect to the node at {}: {e}",
                    self.init.socket.display()
                )
            })?;
            s.write_all(&header(id, kind))
                .map_err(|e| format!("cannot write to the node: {e}"))?;
            Ok(s)
        };
        let io = connect(STDIO)?;
        let err = connect(STDERR)?;
        let out = io
            .try_clone()
            .map_err(|e| format!("cannot duplicate a socket: {e}"))?;
        let child = {
            // Dropped right after the spawn: our copies of the streams must close, or the node
            // would never see the plugin's output end.
            let mut cmd = Command::new(&spec.exe);
            cmd.args(&spec.args)
                .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::from(OwnedFd::from(io)))
                .stdout(Stdio::from(OwnedFd::from(out)))
                .stderr(Stdio::from(OwnedFd::from(err)));
            cmd.spawn()
                .map_err(|e| format!("cannot start plugin {}: {e}", spec.exe.display()))?
        };
        let pid = child.id();
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .insert(id, (spec.cluster.clone(), Pid::from_raw(pid as i32)));
        let me = self.clone();
        std::thread::spawn(move || me.watch(id, child));
        Ok(pid)
    }

    fn watch(&self, id: u64, mut child: std::process::Child) {
        let pid = Pid::from_raw(child.id() as i32);
        // Wait without reaping, forget the pid, then reap: a signal request can never reach a
        // process that merely inherited the number.
        while let Err(nix::errno::Errno::EINTR) =
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .remove(&id);
        let status = match child.wait() {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        self.report(&Event::Exited { id, status });
    }
}

/// Connects as `uid`:`gid` alone (effective ids, no other group), then takes root back.
fn connect_as(socket: &Path, uid: Uid, gid: Gid) -> std::io::Result<UnixStream> {
    use nix::unistd::{getgroups, setegid, seteuid, setgroups};
    let groups = getgroups()?;
    setgroups(&[gid])?;
    let switched = setegid(gid).and_then(|()| seteuid(uid));
    let r = switched
        .map_err(std::io::Error::from)
        .and_then(|()| UnixStream::connect(socket));
    let back = seteuid(Uid::from_raw(0))
        .and_then(|()| setegid(Gid::from_raw(0)))
        .and_then(|()| setgroups(&groups));
    if let Err(e) = back {
        // Without root it cannot start anything any more: better gone, the node will notice.
        eprintln!("launcher-node spawner: cannot take root back ({e}); exiting");
        std::process::exit(1);
    }
    r
}

/// One line of at most [`MAX_LINE`] bytes; None at EOF.
fn read_line(r: &mut impl BufRead) -> Result<Option<String>, String> {
    let mut line = String::new();
    let n = r
        .take(MAX_LINE)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read from the node: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') {
        return Err(format!("a request longer than {MAX_LINE} bytes, or cut short"));
    }
    Ok(Some(line))
}

/// The spawner process (`launcher-node spawner --parent PID`): serves the node on its stdin
/// until the node goes away. Returns the exit code.
pub fn run(parent: u32) -> i32 {
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("launcher-node spawner: cannot ask to die with the node: {e}");
        return 1;
    }
    // The node may have died before the request above: it would never fire then.
    if nix::unistd::getppid().as_raw() as u32 != parent {
        return 1;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("launcher-node spawner: must be started as root by the node");
        return 1;
    }
    let sock = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("launcher-node spawner: no socket on stdin: {e}");
            return 1;
        }
    };
    let (mut input, out) = match sock.try_clone() {
        Ok(out) => (BufReader::new(sock), out),
        Err(e) => {
            eprintln!("launcher-node spawner: {e}");
            return 1;
        }
    };
    let init = match read_line(&mut input).and_then(|l| {
        let l = l.ok_or("the node closed the socket before sending the plugin list")?;
        serde_json::from_str::<Init>(&l).map_err(|e| format!("unreadable plugin list: {e}"))
    }) {
        Ok(init) => init,
        Err(e) => {
            eprintln!("launcher-node spawner: {e}");
            return 1;
        }
    };
    let spawner = Arc::new(Spawner {
        init,
        ledger: Mutex::new(Ledger::default()),
        out: Mutex::new(out),
    });
    loop {
        let line = match read_line(&mut input) {
            Ok(Some(l)) => l,
            // The node is gone (or broke the protocol): so is the reason to exist.
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("launcher-node spawner: {e}; exiting");
                return 1;
            }
        };
        match serde_json::from_str::<Request>(&line) {
            Ok(req) => spawner.handle(req),
            Err(e) => eprintln!("launcher-node spawner: ignoring an unreadable request: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugins() -> Vec<SpawnSpec> {
        vec![SpawnSpec {
            cluster: "Local".into(),
            exe: "/bin/true".into(),
            args: vec![],
            env: vec![],
        }]
    }

    #[test]
    fn only_listed_plugins_under_new_ids_one_copy_each() {
        let list = plugins();
        let mut l = Ledger::default();
        assert_eq!(
            l.check_start(&list, 1, "Local").map(|s| &s.cluster),
            Ok(&"Local".to_string())
        );
        assert!(l
            .check_start(&list, 1, "Other")
            .unwrap_err()
            .contains("no plugin of cluster 'Other'"));
        l.last_id = 5;
        assert!(l
            .check_start(&list, 5, "Local")
            .unwrap_err()
            .contains("not above"));
        l.live.insert(5, ("Local".into(), Pid::from_raw(42)));
        assert!(l
            .check_start(&list, 6, "Local")
            .unwrap_err()
            .contains("still runs"));
        l.live.remove(&5);
        assert!(l.check_start(&list, 6, "Local").is_ok());
    }

    #[test]
    fn signals_reach_only_live_plugins() {
        let mut l = Ledger::default();
        assert_eq!(l.target(3), None);
        l.live.insert(3, ("Local".into(), Pid::from_raw(42)));
        assert_eq!(l.target(3), Some(Pid::from_raw(42)));
    }

    #[test]
    fn requests_are_read_strictly() {
        let ok: Request = serde_json::from_str(r#"{"op":"start","id":1,"cluster":"Local"}"#).unwrap();
        assert_eq!(
            ok,
            Request::Start {
                id: 1,
                cluster: "Local".into()
            }
        );
        let sig: Request = serde_json::from_str(r#"{"op":"signal","id":1,"signal":"Kill"}"#).unwrap();
        assert_eq!(
            sig,
            Request::Signal {
                id: 1,
                signal: StopSignal::Kill
            }
        );
        for bad in [
            r#"{"op":"exec","id":1,"exe":"/bin/sh"}"#,
            r#"{"op":"start","id":1,"cluster":"Local","exe":"/bin/sh"}"#,
            r#"{"op":"signal","id":1,"signal":"Hup"}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_round_trip() {
        assert_eq!(
            parse_header(&header(0x0102_0304_0506_0708, STDERR)),
            (0x0102_0304_0506_0708, STDERR)
        );
    }
}
