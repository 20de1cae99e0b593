//! The Local plugin (DESIGN §5, §6): runs each job as a process on this machine, as the job's
//! user, through a small supervisor process. It speaks only the Launcher Plugin API on its
//! stdin/stdout, so any launcher that speaks that API can drive it.
//!
//! * [`spec`]: the files through which the plugin and a job's supervisor talk.
//! * [`supervisor`]: the supervisor (`launcher-local-plugin supervise <job-dir>`): sandbox,
//!   switch user, exec the job, pass its exit status through.
#![forbid(unsafe_code)]

pub mod spec;
pub mod supervisor;
