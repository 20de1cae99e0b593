//! What the plugin reads from `/proc`: process groups for resource use, sessions for cleaning
//! up after a cancelled supervisor, and command lines for finding a supervisor again.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

/// The fields of `/proc/<pid>/stat` the plugin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// `R`, `S`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// User, system, and waited-for children's CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    /// Clock ticks since boot at which the process started.
    pub start_ticks: u64,
    /// Virtual memory size in bytes.
    pub vsize: u64,
    /// Resident set size in pages.
    pub rss: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let pid = text[..open].trim().parse().ok()?;
    let close = text.rfind(')')?;
    let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3].
    let num = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    let int = |n: usize| -> Option<i32> { f.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: int(4)?,
        pgrp: int(5)?,
        session: int(6)?,
        utime: num(14)?,
        stime: num(15)?,
        cutime: num(16)?,
        cstime: num(17)?,
        start_ticks: num(22)?,
        vsize: num(23)?,
        // rss is signed in the kernel's format; a negative value never happens for live tasks.
        rss: f.get(24 - 3)?.parse::<i64>().ok()?.max(0) as u64,
    })
}

/// Reads `/proc/<pid>/stat`.
pub fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The pids of all processes now.
pub fn all_pids() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on every Linux ABI).
pub fn clock_ticks_per_second() -> f64 {
    static T: OnceLock<f64> = OnceLock::new();
    *T.get_or_init(|| match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    })
}

/// The size of a memory page in bytes.
pub fn page_size() -> u64 {
    static P: OnceLock<u64> = OnceLock::new();
    *P.get_or_init(
        || match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
            Ok(Some(p)) if p > 0 => p as u64,
            _ => 4096,
        },
    )
}

/// Resource use summed over the processes of one process group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupUsage {
    /// Live (non-zombie) processes in the group.
    pub processes: usize,
    /// CPU time in clock ticks, including children the group's processes have waited for.
    pub cpu_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

impl GroupUsage {
    /// Adds one process if it belongs to group `pgrp`.
    pub fn add(&mut self, st: &ProcStat, pgrp: i32) {
        if st.pgrp != pgrp || st.state == 'Z' {
            return;
        }
        self.processes += 1;
        self.cpu_ticks += st.utime + st.stime + st.cutime + st.cstime;
        self.vsize_bytes += st.vsize;
        self.rss_pages += st.rss;
    }
}

/// Resource use of every process in group `pgrp` now.
pub fn group_usage(pgrp: i32) -> GroupUsage {
    let mut u = GroupUsage::default();
    for pid in all_pids() {
        if let Some(st) = read_stat(pid) {
            u.add(&st, pgrp);
        }
    }
    u
}

/// The live (non-zombie) processes of group `pgrp`. A zombie no longer runs: whoever reaps it
/// (the job's supervisor, else init) only frees its entry.
pub fn group_members(pgrp: i32) -> Vec<ProcStat> {
    all_pids()
        .into_iter()
        .filter_map(read_stat)
        .filter(|st| st.pgrp == pgrp && st.state != 'Z')
        .collect()
}

/// Live processes of session `sid`. A session id is the pid of its leader, which the kernel
/// does not hand out again while any member is left, so this never names strangers.
pub fn session_members(sid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter_map(read_stat)
        .filter(|st| st.session == sid && st.state != 'Z')
        .map(|st| st.pid)
        .collect()
}

/// Whether `args` appear one after the other in a NUL-separated command line.
pub fn cmdline_contains(cmdline: &[u8], args: &[&OsStr]) -> bool {
    let parts: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    parts
        .windows(args.len())
        .any(|w| w.iter().zip(args).all(|(a, b)| *a == b.as_bytes()))
}

/// Finds a live process whose command line holds `supervise <job_dir>`: a supervisor the plugin
/// started but had not yet recorded when it stopped. Returns its pid and start time.
pub fn find_supervisor(job_dir: &Path) -> Option<(i32, u64)> {
    let args = [OsStr::new("supervise"), job_dir.as_os_str()];
    all_pids().into_iter().find_map(|pid| {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if !cmdline_contains(&cmd, &args) {
            return None;
        }
        let st = read_stat(pid)?;
        (st.state != 'Z').then_some((pid, st.start_ticks))
    })
}

/// Whether `pid`, started at `start_ticks`, is a live supervisor of the job in `job_dir`: the
/// pid and start time come from files a job's user can write, so the command line must say so
/// too before the plugin signals it (a user can fake it only for their own processes).
pub fn is_supervisor_of(pid: i32, start_ticks: u64, job_dir: &Path) -> bool {
    if !crate::spec::process_alive(pid, start_ticks) {
        return false;
    }
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    cmdline_contains(&cmd, &[OsStr::new("supervise"), job_dir.as_os_str()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 7 3 20 0 1 0 123456 10485760 300 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1";
        let st = parse_stat(line).unwrap();
        assert_eq!((st.pid, st.state, st.pgrp, st.session), (4242, 'S', 4242, 4242));
        assert_eq!(st.ppid, 1);
        assert_eq!((st.utime, st.stime, st.cutime, st.cstime), (250, 50, 7, 3));
        assert_eq!((st.start_ticks, st.vsize, st.rss), (123456, 10485760, 300));
        assert_eq!(parse_stat("12 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn group_usage_counts_only_live_members_of_the_group() {
        let base = parse_stat("1 (a) R 0 7 7 0 -1 0 0 0 0 0 10 5 1 1 20 0 1 0 9 1000 2").unwrap();
        let mut u = GroupUsage::default();
        u.add(&base, 7);
        u.add(&ProcStat { pid: 2, ..base }, 7);
        u.add(
            &ProcStat {
                pid: 3,
                pgrp: 8,
                ..base
            },
            7,
        );
        u.add(
            &ProcStat {
                pid: 4,
                state: 'Z',
                ..base
            },
            7,
        );
        assert_eq!(
            u,
            GroupUsage {
                processes: 2,
                cpu_ticks: 34,
                vsize_bytes: 2000,
                rss_pages: 4
            }
        );
    }

    #[test]
    fn our_own_process_is_found_in_proc() {
        let me = std::process::id() as i32;
        let st = read_stat(me).unwrap();
        assert_eq!(st.pid, me);
        assert!(st.vsize > 0 && st.rss > 0);
        assert!(group_usage(st.pgrp).processes >= 1);
        assert!(clock_ticks_per_second() > 0.0 && page_size() >= 4096);
    }

    #[test]
    fn command_lines_match_consecutive_arguments() {
        let cmd = b"/usr/bin/plugin\0supervise\0/s/jobs/abc\0";
        let yes = [OsStr::new("supervise"), OsStr::new("/s/jobs/abc")];
        let no = [OsStr::new("supervise"), OsStr::new("/s/jobs/ab")];
        assert!(cmdline_contains(cmd, &yes));
        assert!(!cmdline_contains(cmd, &no));
        assert!(!cmdline_contains(b"supervise\0x\0/s/jobs/abc", &yes));
    }
}
