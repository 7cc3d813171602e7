//! The deployment's recent start failures, kept for the management API so a failed start is
//! visible after the fact and not only in the answer of the request that waited for it.

use std::collections::VecDeque;

use serde::Serialize;

use crate::error::GatewayError;
use crate::instance_id::InstanceId;

/// How many start failures a deployment keeps; older ones are dropped.
pub const KEPT_START_FAILURES: usize = 20;

/// The marker that providers put between a failure's reason and the instance's log lines.
const LOG_MARKER: &str = "; last log lines:\n";

/// One start that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StartFailure {
    /// When it failed, RFC 3339 in UTC to the second (`2026-12-05T08:15:00Z`).
    pub at: String,
    /// The instance that failed.
    #[schema(value_type = String, example = "xykemlvy")]
    pub instance: InstanceId,
    /// The error code its waiters got (1004, 1005, 1011, ...).
    pub code: u16,
    /// Why, without the log lines.
    pub reason: String,
    /// The instance's last log lines, oldest first.
    pub last_log: Vec<String>,
}

impl StartFailure {
    /// The failure of `instance` with `error`, now.
    pub(super) fn new(instance: InstanceId, error: &GatewayError) -> Self {
        let (reason, log) = error
            .msg
            .split_once(LOG_MARKER)
            .unwrap_or((error.msg.as_ref(), ""));
        Self {
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            instance,
            code: error.code.code(),
            reason: reason.to_owned(),
            last_log: log.lines().map(str::to_owned).collect(),
        }
    }
}

/// The last [`KEPT_START_FAILURES`] failures, oldest first.
#[derive(Debug, Default)]
pub(super) struct StartFailures(VecDeque<StartFailure>);

impl StartFailures {
    pub(super) fn record(&mut self, failure: StartFailure) {
        if self.0.len() == KEPT_START_FAILURES {
            self.0.pop_front();
        }
        self.0.push_back(failure);
    }

    pub(super) fn to_vec(&self) -> Vec<StartFailure> {
        self.0.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn the_reason_and_the_log_lines_are_split_and_only_the_last_twenty_kept() {
        let error = GatewayError::with_detail(
            ErrorCode::InstanceStartFailed,
            "exited with status 1; last log lines:\nstarting\nno such file",
        );
        let mut kept = StartFailures::default();
        for _ in 0..25 {
            kept.record(StartFailure::new("xykemlvy".parse().unwrap(), &error));
        }
        let failures = kept.to_vec();
        assert_eq!(failures.len(), KEPT_START_FAILURES);
        let last = failures.last().unwrap();
        assert_eq!(last.code, 1004);
        assert!(
            last.reason.ends_with("exited with status 1"),
            "{}",
            last.reason
        );
        assert_eq!(last.last_log, ["starting", "no such file"]);
        assert!(last.at.ends_with('Z') && last.at.len() == 20, "{}", last.at);
    }
}
