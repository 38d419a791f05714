//! CPU time of a process, so every bench row can say what one acknowledged
//! message cost the node (user + system µs), not only how fast it went: on a
//! two-core machine a gain in msgs/s could be CPU taken from the load
//! generator, and this figure shows it.
//!
//! Read from `/proc/PID/stat` (fields 14 and 15: user and system time of
//! every thread of the process, in clock ticks). Linux reports those in
//! `USER_HZ`, which is 100 on every architecture it exports to user space,
//! so one tick is 10 ms: over a run of seconds and thousands of messages
//! that is well under a percent. Off Linux, or for a process that is gone,
//! there is no figure (`None`), never a made-up one.

/// Clock ticks per second of `/proc/PID/stat` (Linux's fixed `USER_HZ`).
const USER_HZ: u64 = 100;

/// User + system CPU time of process `pid` so far, in µs.
pub fn process_cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// User + system µs from the text of a `/proc/PID/stat`. The command name
/// (field 2, in parentheses) may hold spaces and parentheses itself, so
/// fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * (1_000_000 / USER_HZ))
}

/// A process's CPU time from the start of a measurement: `start` before
/// the timed loop, [`Meter::per_msg`] after it.
pub struct Meter {
    pid: Option<u32>,
    start: Option<u64>,
}

impl Meter {
    /// `pid`: the server's process, when it is the bench's own (`None`:
    /// no figure).
    pub fn start(pid: Option<u32>) -> Meter {
        Meter {
            pid,
            start: pid.and_then(process_cpu_us),
        }
    }

    /// CPU µs per message since `start`, over `msgs` acknowledged.
    pub fn per_msg(&self, msgs: u64) -> Option<f64> {
        per_msg(self.start, self.pid.and_then(process_cpu_us), msgs)
    }
}

/// CPU µs per message between two readings of [`process_cpu_us`].
pub fn per_msg(before: Option<u64>, after: Option<u64>, msgs: u64) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if msgs > 0 && a >= b => Some((a - b) as f64 / msgs as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_summed_past_a_name_with_spaces() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let stat = "4242 (waybill (x) y) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 70 0 0 20 0 9 0";
        assert_eq!(parse_stat(stat), Some(3_200_000));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(per_msg(Some(1_000), Some(3_000), 100), Some(20.0));
        assert_eq!(per_msg(Some(1_000), None, 100), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        let spin: u64 = (0..2_000_000u64).fold(0, |a, b| a ^ b.wrapping_mul(31));
        assert!(spin != 1);
        assert!(process_cpu_us(std::process::id()).is_some());
        assert!(Meter::start(Some(std::process::id())).per_msg(1).is_some());
        assert_eq!(Meter::start(None).per_msg(1), None);
    }
}
