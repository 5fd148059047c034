//! How many transcodes run at once on a host, and how many encoder threads each gets:
//! `run --jobs N` or `run --jobs auto`.
//!
//! `auto` gives each job [`AUTO_THREADS_PER_JOB`] cores and runs as many jobs as the host has
//! such shares (at least one, using every core). Why that number:
//! - measured (`video-worker bench --videos 12 --jobs 1,2,4`, README "A host's throughput"):
//!   on 2 cores, 1, 2 and 4 concurrent jobs give the same jobs per hour within the runs'
//!   spread, so a small host loses nothing by running one job on all its cores;
//! - reasoned, not measured (no host here has more than 2 cores): one job's ladder feeds
//!   from one decoder thread, and x264's frame threads lose efficiency (and a little quality)
//!   as they grow; eight threads split by pixels (1080p 8, 720p 4, 480p 2) stay well inside
//!   both limits, and more jobs, not more threads per job, use the rest of a 16–64-core host.

use std::fmt;
use std::str::FromStr;

/// Cores one job gets under `--jobs auto` (see the module comment for why).
pub const AUTO_THREADS_PER_JOB: usize = 8;

/// `--jobs`: a fixed number of concurrent transcodes, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Auto,
    Jobs(usize),
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency::Jobs(1)
    }
}

/// What a host runs: `slots` jobs at once, each with `threads_per_job` encoder threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub slots: usize,
    pub threads_per_job: usize,
}

impl Concurrency {
    /// The plan on a host with `cores` usable cores. A fixed count splits the cores evenly
    /// (at least one thread each); `auto` makes one slot per [`AUTO_THREADS_PER_JOB`] cores.
    pub fn plan(self, cores: usize) -> Plan {
        let cores = cores.max(1);
        let slots = match self {
            Concurrency::Jobs(n) => n.max(1),
            Concurrency::Auto => (cores / AUTO_THREADS_PER_JOB).max(1),
        };
        Plan {
            slots,
            threads_per_job: (cores / slots).max(1),
        }
    }
}

impl FromStr for Concurrency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Concurrency::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(Concurrency::Jobs(n)),
            _ => Err(format!(
                "expected `auto` or a number of jobs from 1 to 1024, not `{s}`"
            )),
        }
    }
}

// In the configuration file as in the flag: `jobs = 2` or `jobs = "auto"` (also `"2"`).
impl serde::Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Concurrency::Auto => s.serialize_str("auto"),
            Concurrency::Jobs(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Concurrency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Given {
            Number(u64),
            Text(String),
        }
        match Given::deserialize(d)? {
            Given::Number(n) => n.to_string().parse(),
            Given::Text(t) => t.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Concurrency::Auto => f.write_str("auto"),
            Concurrency::Jobs(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_file_takes_a_number_or_auto_and_nothing_else() {
        let parse = |v: serde_json::Value| serde_json::from_value::<Concurrency>(v);
        assert_eq!(parse(serde_json::json!(3)).unwrap(), Concurrency::Jobs(3));
        assert_eq!(parse(serde_json::json!("auto")).unwrap(), Concurrency::Auto);
        assert_eq!(parse(serde_json::json!("2")).unwrap(), Concurrency::Jobs(2));
        assert!(parse(serde_json::json!(0)).is_err());
        assert!(parse(serde_json::json!("many")).is_err());
        assert_eq!(serde_json::to_value(Concurrency::Auto).unwrap(), "auto");
        assert_eq!(serde_json::to_value(Concurrency::Jobs(4)).unwrap(), 4);
    }

    #[test]
    fn auto_runs_one_job_per_eight_cores_and_gives_each_its_share() {
        let cases = [
            (1, 1, 1),
            (2, 1, 2),
            (7, 1, 7),
            (8, 1, 8),
            (16, 2, 8),
            (24, 3, 8),
            (30, 3, 10),
            (64, 8, 8),
        ];
        for (cores, slots, threads) in cases {
            assert_eq!(
                Concurrency::Auto.plan(cores),
                Plan {
                    slots,
                    threads_per_job: threads
                },
                "{cores} cores"
            );
        }
    }

    #[test]
    fn a_fixed_count_splits_the_cores_evenly_with_at_least_one_thread_a_job() {
        assert_eq!(
            Concurrency::Jobs(2).plan(2),
            Plan {
                slots: 2,
                threads_per_job: 1
            }
        );
        assert_eq!(
            Concurrency::Jobs(4).plan(2),
            Plan {
                slots: 4,
                threads_per_job: 1
            }
        );
        assert_eq!(
            Concurrency::Jobs(3).plan(16),
            Plan {
                slots: 3,
                threads_per_job: 5
            }
        );
    }

    #[test]
    fn jobs_parse_as_auto_or_a_bounded_count() {
        assert_eq!("auto".parse(), Ok(Concurrency::Auto));
        assert_eq!("AUTO".parse(), Ok(Concurrency::Auto));
        assert_eq!("3".parse(), Ok(Concurrency::Jobs(3)));
        for bad in ["0", "-1", "1025", "two", ""] {
            assert!(bad.parse::<Concurrency>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(Concurrency::Auto.to_string(), "auto");
        assert_eq!(Concurrency::Jobs(2).to_string(), "2");
    }
}
