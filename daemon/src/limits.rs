//! Process limits: at start the daemon raises its soft `RLIMIT_NOFILE` (open files) to the
//! hard limit, since every session holds a socket and the usual soft limit (1024) ends
//! at about a thousand sessions with `EMFILE`. The unit file sets the hard limit
//! (`LimitNOFILE=`).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Open-file limits before and after [`raise_nofile`] (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimits {
    /// The soft limit found at start.
    pub soft_before: Option<u64>,
    /// The soft limit now.
    pub soft: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// Raises the soft open-file limit to the hard one and logs both; a refusal is logged,
/// never fatal.
pub fn raise_nofile() -> NofileLimits {
    let before = getrlimit(Resource::Nofile);
    let mut limits = NofileLimits {
        soft_before: before.current,
        soft: before.current,
        hard: before.maximum,
    };
    if before.current != before.maximum {
        let wanted = Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        match setrlimit(Resource::Nofile, wanted) {
            Ok(()) => limits.soft = getrlimit(Resource::Nofile).current,
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    let show = |l: Option<u64>| l.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    tracing::info!(
        soft = %show(limits.soft),
        hard = %show(limits.hard),
        soft_at_start = %show(limits.soft_before),
        "open-file limit (RLIMIT_NOFILE)"
    );
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_ends_at_the_hard_one() {
        let l = raise_nofile();
        assert_eq!(l.soft, l.hard);
    }
}
